"""Where ``certbot-dane`` logs: a file beside certbot's own logs.

Administrators look in certbot's log directory when a renewal misbehaves,
so the command's log goes there too, in certbot's line format, as
``certbot-dane.log``. The terminal gets results and errors from the command
itself; log lines reach it only with ``--verbose``, or when the file cannot
be written (then with one warning line saying so, rather than failing a
timer over a log file).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

DEFAULT_LOGS_DIR = "/var/log/letsencrypt"
LOG_NAME = "certbot-dane.log"
FILE_FORMAT = "%(asctime)s:%(levelname)s:%(name)s:%(message)s"
STDERR_FORMAT = "certbot-dane: %(message)s"
CLI_LOGGER = "certbot_dane.cli"

#: Marks the handlers this module added, so a second setup (tests calling
#: main() repeatedly) replaces them instead of stacking them.
_TAG = "_certbot_dane_cli"


def _open_log(directory: Path) -> logging.Handler:
    """A file handler on ``directory/certbot-dane.log``; OSError if impossible."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    path = directory / LOG_NAME
    # Create the file private before logging opens it with the umask's mode.
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    return handler


def setup(logs_dir: str, verbose: bool) -> Path | None:
    """Attach the handlers; return the log file's path, or None on fallback."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO)
    logging.getLogger("certbot_dane").setLevel(logging.DEBUG)
    handlers: list[logging.Handler] = []
    stderr_level = logging.INFO if verbose else None
    directory = Path(logs_dir)
    path: Path | None = directory / LOG_NAME
    try:
        handlers.append(_open_log(directory))
    except OSError as err:
        reason = err.strerror or str(err)
        print(
            f"certbot-dane: warning: cannot write {directory / LOG_NAME} ({reason}); "
            "logging to stderr only",
            file=sys.stderr,
        )
        path = None
        stderr_level = stderr_level or logging.WARNING
    if stderr_level is not None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(STDERR_FORMAT))
        stream.setLevel(stderr_level)
        # The command prints its own results and errors; do not repeat them.
        stream.addFilter(lambda record: not record.name.startswith(CLI_LOGGER))
        handlers.append(stream)
    for handler in handlers:
        setattr(handler, _TAG, True)
        root.addHandler(handler)
    return path
