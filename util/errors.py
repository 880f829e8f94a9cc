"""The one exception type for bad user input, and the wrapper that turns it into a clean exit."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user (config, files, data). Its message names the key, file or line."""


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's `main`; a UserError prints its message (no traceback) and exits with code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
