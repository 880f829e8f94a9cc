"""Bad user input and stopped runs as exceptions, and the wrapper that turns them into a clean exit.

Exit codes: 2 bad input (UserError); 3 a non-finite training loss; 4 a checkpoint or result that could not be
written (e.g. a full disk); 75 stopped on request (SIGTERM or SIGUSR1) after writing a checkpoint: rerun with
TRAIN.resume auto (75 is sysexits' EX_TEMPFAIL, "try again later").
"""
from __future__ import annotations

import os
import sys
from typing import Callable

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_WRITE_FAILED = 4
EXIT_STOPPED = 75


class UserError(Exception):
    """Bad input from the user (config, files, data). Its message names the key, file or line."""


class RunStopped(Exception):
    """A run that ends early on purpose: its message says why and what was kept, `exit_code` tells a scheduler."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def user_message(exc: UserError) -> str:
    """The message of a UserError, also when a DataLoader worker re-raised it with the worker's traceback."""
    text = str(exc)
    marker = "UserError: "
    if "Original Traceback" in text and marker in text:
        return text[text.rindex(marker) + len(marker):].strip()
    return text


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's `main`; a UserError prints its message (no traceback) and exits with code 2, a RunStopped
    with its own code."""
    try:
        main()
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        leave_exit_code(EXIT_BAD_INPUT)
        sys.exit(EXIT_BAD_INPUT)
    except RunStopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        leave_exit_code(exc.exit_code)
        sys.exit(exc.exit_code)


def leave_exit_code(code: int) -> None:
    """Under util/launch.sh's torchrun, tell the launcher this process's exit code (torchrun itself says 1)."""
    path = os.environ.get("LAUNCH_EXIT_FILE")
    if path:
        with open(path, "w") as f:
            f.write(f"{code}\n")
