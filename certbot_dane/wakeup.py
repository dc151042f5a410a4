"""A check at the end of a hold: a one-shot systemd timer armed for that moment.

The shipped timer runs ``certbot-dane check`` every 5 minutes, and a run
finishes the holds that end within ``--finish-within`` seconds by waiting
for them. Two kinds of hold escape that: one that ends before the first
timer run after the renewal (a short hold, the renewal made by
``certbot renew``), and one that ends just after a run's window. For both,
the run that learns when the hold ends (``certbot renew`` itself, or the
timer's check) asks systemd for a transient timer that runs
``certbot-dane check --cert-name NAME`` at that moment (``systemd-run
--on-active``). Its cost is one transient timer and service per hold, gone
once they ran; the check they run is an ordinary one (it takes the lock).

Only where systemd runs the system (``/run/systemd/system``) and
``systemd-run`` is installed; elsewhere nothing is armed and the next run
of the timer (or cron job) switches the lineage. ``CERTBOT_DANE_SYSTEMD_RUN``
names another program with the same command line (for tests and for
installations that schedule jobs otherwise).
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

SYSTEMD_DIR = Path("/run/systemd/system")
ENVIRONMENT = "CERTBOT_DANE_SYSTEMD_RUN"
#: A timer fires within this accuracy of its time (systemd's default is a minute).
ACCURACY = "1s"


def program() -> str | None:
    """The ``systemd-run`` to use, or None when nothing can be armed here."""
    override = os.environ.get(ENVIRONMENT)
    if override:
        return override
    if not SYSTEMD_DIR.is_dir():
        return None
    return shutil.which("systemd-run")


def certbot_dane() -> str:
    """The ``certbot-dane`` command of this installation."""
    beside = Path(sys.executable).parent / "certbot-dane"
    if beside.exists():
        return str(beside)
    return shutil.which("certbot-dane") or "certbot-dane"


def unit_name(lineage: str, at: float) -> str:
    """One unit per lineage and moment: arming the same hold twice is a no-op."""
    safe = re.sub(r"[^A-Za-z0-9.-]", "_", lineage)
    return f"certbot-dane-hold-{safe}-{int(at)}"


def arm(lineage: str, at: float, now: float, config_dir: str, logs_dir: str) -> bool:
    """Ask for a check of ``lineage`` at ``at``; True when a timer was armed.

    Never fails the caller: a timer that cannot be armed only means the
    switch comes at the next regular run, as without it.
    """
    runner = program()
    if runner is None:
        return False
    delay = max(1, math.ceil(at - now) + 1)
    argv = [
        runner,
        "--quiet",
        "--collect",
        f"--unit={unit_name(lineage, at)}",
        f"--on-active={delay}s",
        f"--timer-property=AccuracySec={ACCURACY}",
        certbot_dane(),
        "--config-dir",
        str(config_dir),
        "--logs-dir",
        str(logs_dir),
        "--quiet",
        "check",
        "--cert-name",
        lineage,
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.info("dane: lineage %s: no check armed at the hold's end: %s", lineage, err)
        return False
    if done.returncode != 0:
        # An existing unit of the same name: this hold is armed already.
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        logger.info(
            "dane: lineage %s: no check armed at the hold's end: %s",
            lineage,
            reason[-1] if reason else f"{runner} exited {done.returncode}",
        )
        return False
    logger.info("dane: lineage %s: a check is armed in %d s, when its hold ends", lineage, delay)
    return True
