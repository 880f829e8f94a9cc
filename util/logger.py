"""A run's logger: a log file plus console output that does not break tqdm progress bars."""
from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def make_logger(name: str, log_file: str | Path | None, enabled: bool = True) -> logging.Logger:
    """A logger writing to `log_file` (appending) and the console; silent when not `enabled` (rank > 0)."""
    logger = logging.getLogger(f"rppgd.{name}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    if enabled:
        fmt = logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S")
        console = _TqdmHandler()
        console.setFormatter(fmt)
        logger.addHandler(console)
        if log_file is not None:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file)
            handler.setFormatter(fmt)
            logger.addHandler(handler)
    # what the model builders log (rppgd.model: which normalisation an hf: folder's model uses) goes here too
    model_log = logging.getLogger("rppgd.model")
    model_log.handlers, model_log.propagate = list(logger.handlers), False
    model_log.setLevel(logger.level)
    return logger
