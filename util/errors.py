"""The one exception type for bad user input, and the wrapper that turns it into a clean exit."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user (config, files, data). Its message names the key, file or line."""


def user_message(exc: UserError) -> str:
    """The message of a UserError, also when a DataLoader worker re-raised it with the worker's traceback."""
    text = str(exc)
    marker = "UserError: "
    if "Original Traceback" in text and marker in text:
        return text[text.rindex(marker) + len(marker):].strip()
    return text


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's `main`; a UserError prints its message (no traceback) and exits with code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        sys.exit(2)
