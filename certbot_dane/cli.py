"""The ``certbot-dane`` command: run the deferred step, show where each lineage is.

Exit codes: 0 all well (waiting counts as well), 1 a lineage failed (DNS,
reload, state), 2 bad usage or a lineage that does not exist.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import rollover, state
from .engine import Engine, EngineError, policy_of
from .state import StateError

DEFAULT_CONFIG_DIR = "/etc/letsencrypt"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certbot-dane",
        description="Keep DANE TLSA records and certbot certificates in step.",
    )
    parser.add_argument(
        "--config-dir",
        default=DEFAULT_CONFIG_DIR,
        help=f"certbot's configuration directory (default: {DEFAULT_CONFIG_DIR})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="run the deferred step: switch when records are live")
    check.add_argument("--cert-name", help="only this lineage")
    status = sub.add_parser("status", help="where each lineage is in its rollover")
    status.add_argument("--cert-name", help="only this lineage")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Results and errors are printed once by this module; the library's log
    # lines only show with --verbose.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="certbot-dane: %(message)s",
    )
    try:
        names = _lineages(args.config_dir, args.cert_name)
        if args.command == "check":
            return _check(args, names)
        return _status(args, names)
    except UsageError as err:
        print(f"certbot-dane: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (StateError, EngineError) as err:
        print(f"certbot-dane: {err}", file=sys.stderr)
        return EXIT_FAILED


def _lineages(config_dir: str, only: str | None) -> list[str]:
    if not Path(config_dir).is_dir():
        raise UsageError(f"config dir {config_dir} does not exist; pass --config-dir")
    names = state.list_lineages(config_dir)
    if only is None:
        return names
    if only not in names:
        raise UsageError(
            f"lineage {only!r} is not managed by certbot-dane in {config_dir}; "
            f"'certbot-dane status' lists the managed ones"
        )
    return [only]


def _check(args: argparse.Namespace, names: list[str]) -> int:
    engine = Engine(args.config_dir)
    code = EXIT_OK
    for name in names:
        try:
            result = engine.check(name)
        except (StateError, EngineError) as err:
            print(f"certbot-dane: {name}: {err}", file=sys.stderr)
            code = EXIT_FAILED
            continue
        if result.error:
            print(f"certbot-dane: {name}: {result.error}", file=sys.stderr)
            code = EXIT_FAILED
        elif not args.quiet:
            done = ", ".join(result.steps) or "nothing to do"
            waiting = f"; waiting: {result.waiting}" if result.waiting else ""
            print(f"{name}: {done}{waiting}")
    return code


def _status_row(data: state.LineageFile, now: float) -> dict:
    s = data.rollover
    policy = policy_of(data.settings)
    hold_end = None
    if s.pending is not None and s.visible_since is not None:
        hold_end = s.visible_since + rollover.hold_seconds(s, None, policy)
    return {
        "lineage": data.lineage,
        "served": s.served.number if s.served else None,
        "pending": s.pending.number if s.pending else None,
        "state": rollover.describe(s, now, policy),
        "visible_since": s.visible_since,
        "hold_until": hold_end,
        "owned_records": [r.zone_line(0).replace(" 0 IN ", " IN ") for r in sorted(s.owned)],
        "last_check": data.last_check,
        "last_error": s.last_error,
    }


def _status(args: argparse.Namespace, names: list[str]) -> int:
    now = time.time()
    rows = []
    for name in names:
        data = state.load(args.config_dir, name)
        if data is not None:
            rows.append(_status_row(data, now))
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print(f"no lineage is managed by certbot-dane in {args.config_dir}")
        return EXIT_OK
    for row in rows:
        pending = row["pending"] if row["pending"] is not None else "-"
        line = f"{row['lineage']}: served {row['served']}, pending {pending}, {row['state']}"
        if row["hold_until"] is not None and row["hold_until"] > now:
            line += f", {row['hold_until'] - now:.0f} s left in the hold"
        if row["last_error"]:
            line += f"; last error: {row['last_error']}"
        print(line)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
