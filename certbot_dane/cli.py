"""The ``certbot-dane`` command: the deferred step, and the operator's tools.

Subcommands: ``check`` (the deferred step; ``--wait`` until it is done),
``status``, ``print`` (TLSA records in zone-file format), ``verify`` (DNS
against the served certificate and a live endpoint; ``--write-test``: do the
lineage's DNS credentials add and delete a record?), ``reset`` (re-pin the
links to a visible version after hand edits) and ``import-alnitak``.

Exit codes: 0 all well (a lineage that waits counts as well), 1 a lineage
failed or does not verify (DNS, reload, state, mismatch, endpoint silent,
``check --wait`` timed out, a step of ``verify --write-test``), 2 bad usage,
an unknown lineage or unreadable input (config dir, certificate file,
alnitak config).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import (
    alnitak,
    clilog,
    danedir,
    repin,
    report,
    state,
    tlsa,
    verify,
    wakeup,
    writetest,
    zonefile,
)
from .engine import Engine, EngineError, Result
from .lookup import resolver_address
from .observe import ObserveError, parse_address
from .state import StateError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_DIR = "/etc/letsencrypt"
DEFAULT_WAIT_TIMEOUT = 3600.0
DEFAULT_WAIT_INTERVAL = 5.0
#: The longest sleep between two checks with --wait, even in a day-long hold.
MAX_SLEEP = 300.0
#: A check at a hold's end comes this long after it: the hold is over when it runs.
HOLD_END_SLACK = 0.1

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad usage, an unknown lineage or unreadable input: exit 2."""


class Failed(Exception):
    """A lineage failed or did not verify: exit 1 (the message was printed)."""


# Arguments ----------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, sub: bool) -> None:
    """Options accepted before and after the subcommand.

    The subcommand's copies default to SUPPRESS so that a value given before
    the subcommand is not overwritten by the subparser's default.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if sub else value

    parser.add_argument(
        "--config-dir",
        default=default(DEFAULT_CONFIG_DIR),
        help=f"certbot's configuration directory (default: {DEFAULT_CONFIG_DIR})",
    )
    parser.add_argument(
        "--logs-dir",
        default=default(clilog.DEFAULT_LOGS_DIR),
        help=f"where certbot-dane.log is written (default: {clilog.DEFAULT_LOGS_DIR})",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="print errors only"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False),
        help="also show log lines on stderr",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _ttl(text: str) -> int:
    if not text.isdigit() or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TTL (0 to 2147483647 seconds)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certbot-dane",
        description="Keep DANE TLSA records and certbot certificates in step.",
        epilog="Exit codes: 0 ok, 1 a lineage failed or does not match, "
        "2 bad usage, unknown lineage or unreadable input.",
    )
    _global_options(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _global_options(p, sub=True)
        return p

    check = command("check", "run the deferred step: switch when the new records are live")
    check.add_argument("--cert-name", help="only this lineage")
    check.add_argument(
        "--wait", action="store_true", help="keep checking until no lineage has work pending"
    )
    check.add_argument(
        "--timeout", type=_positive, default=DEFAULT_WAIT_TIMEOUT,
        help=f"with --wait: give up after this many seconds (default: {DEFAULT_WAIT_TIMEOUT:.0f})",
    )
    check.add_argument(
        "--interval", type=_positive, default=DEFAULT_WAIT_INTERVAL,
        help="with --wait: seconds between checks while waiting for DNS "
        f"(default: {DEFAULT_WAIT_INTERVAL:.0f})",
    )
    check.add_argument(
        "--finish-within", type=_positive, metavar="SECONDS",
        help="after one check of every lineage, check each whose hold ends within this "
        "many seconds again when the hold ends, in this process, instead of at the next run "
        "(the shipped timer passes 240, less than its 5-minute period)",
    )

    status = command(
        "status", "where each lineage is in its rollover: what a check would do now, and why"
    )
    status.add_argument("--cert-name", help="only this lineage")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--offline", action="store_true",
        help="ask neither DNS nor the endpoints (VISIBLE shows ?, STATE what a check would "
        "look at)",
    )

    show = command("print", "print TLSA records in zone-file format")
    show.add_argument(
        "items", nargs="*", metavar="ITEM",
        help="a managed lineage, a certificate file (cert.pem, fullchain.pem, or chain.pem "
        "for its CA), UST:FILE or UST:PORT:FILE (default: every managed lineage)",
    )
    show.add_argument("--cert-name", help="a managed lineage: its served and pending versions")
    show.add_argument(
        "--all-versions", metavar="NAME", help="every version in <config-dir>/archive/NAME"
    )
    show.add_argument(
        "--tlsa", metavar="SPECS",
        help="specs for certificate files and --all-versions, as --dane-tlsa "
        f"(default: the lineage's, else {zonefile.DEFAULT_SPECS})",
    )
    show.add_argument(
        "--ttl", type=_ttl, default=zonefile.DEFAULT_TTL,
        help=f"TTL of the printed records (default: {zonefile.DEFAULT_TTL})",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")

    check_dns = command(
        "verify", "compare the TLSA records in DNS with the served certificate and an endpoint"
    )
    check_dns.add_argument("--cert-name", help="only this lineage")
    check_dns.add_argument(
        "--connect", metavar="HOST:PORT", help="also check what this endpoint presents"
    )
    check_dns.add_argument(
        "--starttls", choices=verify.STARTTLS_PROTOCOLS, help="negotiate TLS with STARTTLS first"
    )
    check_dns.add_argument(
        "--resolver", metavar="ADDR[:PORT]",
        help="validating resolver to ask (default: the lineage's, else the system's)",
    )
    check_dns.add_argument(
        "--timeout", type=_positive,
        help=f"seconds to wait for the endpoint (default: {verify.CONNECT_TIMEOUT:.0f}), or "
        "with --write-test for the test record to appear, and again to go (default: "
        f"{writetest.WAIT_TIMEOUT:.0f})",
    )
    check_dns.add_argument("--json", action="store_true", help="machine-readable output")
    check_dns.add_argument(
        "--write-test", action="store_true",
        help="with --cert-name: add a throw-away TLSA record through the lineage's DNS "
        "credentials, wait until every authoritative server serves it, delete it",
    )

    reset = command(
        "reset", "re-pin the dane links to the version whose records are visible"
    )
    reset.add_argument("--cert-name", required=True, help="the lineage to re-pin")
    reset.add_argument(
        "--resolver", metavar="ADDR[:PORT]",
        help="validating resolver to ask (default: the lineage's, else the system's)",
    )

    port = command(
        "import-alnitak", "print the certbot commands that take over an alnitak configuration"
    )
    port.add_argument("file", metavar="FILE", help="alnitak's configuration (/etc/alnitak.conf)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # certbot 2.1 imports pkg_resources, which new setuptools answers with a
    # deprecation warning on stderr: noise for a timer that must stay quiet.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    args = _parser().parse_args(argv)
    clilog.setup(args.logs_dir, args.verbose)
    logger.info("certbot-dane %s (config dir %s)", args.command, args.config_dir)
    handlers = {
        "check": _check,
        "status": _status,
        "print": _print,
        "verify": _verify,
        "reset": _reset,
        "import-alnitak": _import_alnitak,
    }
    try:
        return handlers[args.command](args)
    except UsageError as err:
        _error(str(err))
        return EXIT_USAGE
    except (StateError, EngineError) as err:
        _error(str(err))
        return EXIT_FAILED
    except Failed:
        return EXIT_FAILED


def _error(message: str) -> None:
    logger.error("%s", message)
    print(f"certbot-dane: {message}", file=sys.stderr)


def _about(name: str, message: object) -> str:
    """``NAME: message``, without doubling a prefix the message already has."""
    text = str(message)
    if text.startswith((f"lineage {name}: ", f"{name}: ")):
        return text
    return f"{name}: {text}"


def _out(args: argparse.Namespace, line: str) -> None:
    logger.info("%s", line)
    if not args.quiet:
        print(line)


# Lineages -----------------------------------------------------------------


def _config_dir(config_dir: str) -> Path:
    path = Path(config_dir)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise UsageError(f"config dir {config_dir} {what}; pass --config-dir")
    for directory in (path, state.state_dir(path)):
        if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            raise UsageError(f"cannot read {directory}: permission denied; run as root")
    return path


def _lineages(config_dir: str, only: str | None) -> list[str]:
    _config_dir(config_dir)
    names = state.list_lineages(config_dir)
    if only is None:
        return names
    if only not in names:
        raise UsageError(
            f"lineage {only!r} is not managed by certbot-dane in {config_dir}; "
            f"'certbot-dane status' lists the managed ones"
        )
    return [only]


def _load(config_dir: str, name: str) -> state.LineageFile:
    data = state.load(config_dir, name)
    if data is None:
        raise UsageError(f"lineage {name!r} is not managed by certbot-dane in {config_dir}")
    return data


# check --------------------------------------------------------------------


def _result_line(result: Result) -> str:
    done = ", ".join(result.steps) or "nothing to do"
    waiting = f"; waiting: {result.waiting}" if result.waiting else ""
    return f"{result.lineage}: {done}{waiting}"


def _next_delay(waiting: Sequence[Result], interval: float, left: float) -> float:
    """Sleep until the earliest known moment something can change, bounded.

    A hold has an end (``until``); "not yet visible" and errors have none,
    so they are polled every ``interval`` seconds.
    """
    now = time.time()
    delays = [
        max(0.0, r.until - now) + 0.2 if r.until is not None and not r.error else interval
        for r in waiting
    ]
    return max(0.2, min([*delays, MAX_SLEEP, left]))


def _pending_reason(result: Result) -> str:
    if result.error:
        return _about(result.lineage, result.error)
    reason = result.waiting or "not settled"
    if result.until is not None:
        reason += f", {max(0, result.until - time.time()):.0f} s left"
    return f"{result.lineage}: {reason}"


def _sleep(delay: float, waiting: Sequence[Result], show: bool) -> None:
    """Sleep; on a terminal, keep one status line up to date meanwhile."""
    end = time.monotonic() + delay
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        if show:
            pending = "; ".join(_pending_reason(r) for r in waiting)
            sys.stderr.write(f"\rcertbot-dane: next check in {left:.0f} s; {pending}\x1b[K")
            sys.stderr.flush()
        time.sleep(min(1.0, left))
    if show:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _check(args: argparse.Namespace) -> int:
    if args.finish_within and args.wait:
        raise UsageError(
            "--finish-within is for the timer's single check; --wait already checks until "
            "every lineage is done: drop one of them"
        )
    names = _lineages(args.config_dir, args.cert_name)
    if not names:
        _out(args, f"no lineage is managed by certbot-dane in {args.config_dir}")
        return EXIT_OK
    engine = Engine(args.config_dir, audit=True)
    if args.finish_within:
        return _check_finishing(args, engine, names)
    wait = bool(args.wait)
    show = wait and not args.quiet and sys.stderr.isatty()
    deadline = time.monotonic() + args.timeout
    remaining = list(names)
    failed: set[str] = set()
    printed: dict[str, str] = {}
    while True:
        results = engine.check_many(remaining)
        waiting: list[Result] = []
        for name in remaining:
            outcome = results.get(name)
            if not isinstance(outcome, Result):
                _error(_about(name, outcome or "not checked"))
                failed.add(name)
                continue
            if outcome.error:
                line = _about(name, outcome.error)
                if printed.get(name) != line:
                    _error(line)
                printed[name] = line
                if wait:
                    waiting.append(outcome)  # errors are retried until the timeout
                else:
                    failed.add(name)
                continue
            if not outcome.settled:
                waiting.append(outcome)
            line = _result_line(outcome)
            if not wait or outcome.steps or printed.get(name) != line:
                _out(args, line)
            printed[name] = line
        if not wait or not waiting:
            return EXIT_FAILED if failed else EXIT_OK
        left = deadline - time.monotonic()
        if left <= 0:
            pending = "; ".join(_pending_reason(r) for r in waiting)
            _error(f"gave up waiting after {args.timeout:.0f} s: {pending}")
            return EXIT_FAILED
        _sleep(_next_delay(waiting, args.interval, left), waiting, show)
        remaining = [r.lineage for r in waiting]


def _check_finishing(
    args: argparse.Namespace,
    engine: Engine,
    names: list[str],
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """One check of every lineage; then each whose hold ends within ``--finish-within``
    seconds is checked again at that moment, so it switches at the hold's end and
    not one timer period later.

    Every result of the first check is printed (and flushed, for the journal)
    before any wait, so the other lineages are not held up. No lock is held
    while waiting: ``certbot renew`` or another check may run meanwhile. The
    engine's clock decides the holds, so the waits are measured on it too.
    A hold that ends later than that gets a one-shot check armed for its end
    (:mod:`.wakeup`), where systemd runs.
    """
    failed = False
    horizon = engine.clock() + args.finish_within
    due: dict[str, float] = {}
    results = engine.check_many(names)
    while True:
        for name, outcome in results.items():
            due.pop(name, None)
            if not isinstance(outcome, Result) or outcome.error:
                _error(_about(name, outcome.error if isinstance(outcome, Result) else outcome))
                failed = True
                continue
            _out(args, _result_line(outcome))
            if outcome.waiting_for == "hold" and outcome.until is not None:
                if outcome.until <= horizon:
                    due[name] = outcome.until
                else:
                    wakeup.arm(name, outcome.until, engine.clock(), args.config_dir, args.logs_dir)
        if not due:
            return EXIT_FAILED if failed else EXIT_OK
        soonest = min(due.values())
        batch = [name for name, until in due.items() if until <= soonest]
        delay = max(0.0, soonest - engine.clock()) + HOLD_END_SLACK
        logger.info("checking %s again in %.1f s, when its hold ends", ", ".join(batch), delay)
        sys.stdout.flush()
        sleep(delay)
        results = engine.check_many(batch)


# status -------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    names = _lineages(args.config_dir, args.cert_name)
    now = time.time()
    rows = []
    code = EXIT_OK
    engine = Engine(args.config_dir, audit=True, offline=args.offline)
    for name, run in engine.explain_many(names).items():
        if isinstance(run, Exception):
            _error(_about(name, run))
            code = EXIT_FAILED
            continue
        rows.append(report.status_row(run, args.config_dir, now, dns=not args.offline))
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    elif rows:
        print(report.table(rows, now))
    elif code == EXIT_OK:
        print(f"no lineage is managed by certbot-dane in {args.config_dir}")
    return code


# print --------------------------------------------------------------------


def _specs(text: str | None) -> tuple[tlsa.Target, ...] | None:
    if text is None:
        return None
    try:
        return tlsa.parse_specs(text)
    except tlsa.SpecError as err:
        raise UsageError(f"--tlsa: {err}") from None


def _print(args: argparse.Namespace) -> int:
    override = _specs(args.tlsa)
    default = override or tlsa.parse_specs(zonefile.DEFAULT_SPECS)
    groups: list[zonefile.Group] = []
    lineages: list[str] = []
    try:
        for item in args.items:
            targets, path = zonefile.parse_item(item)
            if targets is not None:
                groups.append(zonefile.Group(str(path), zonefile.file_records(path, targets)))
            elif path.exists() or "/" in item or item.endswith(".pem"):
                # A lineage name never has a slash: this is meant as a file.
                groups.append(zonefile.Group(str(path), zonefile.file_records(path, default)))
            elif Path(args.config_dir).is_dir() and item in state.list_lineages(args.config_dir):
                lineages.append(item)
                groups += zonefile.lineage_groups(_load(args.config_dir, item))
            else:
                raise UsageError(
                    f"{item}: no such certificate file, and no lineage {item!r} is managed "
                    f"in {args.config_dir}"
                )
        if args.cert_name:
            for name in _lineages(args.config_dir, args.cert_name):
                groups += zonefile.lineage_groups(_load(args.config_dir, name))
        if args.all_versions:
            _config_dir(args.config_dir)
            targets = override
            if targets is None:
                data = state.load(args.config_dir, args.all_versions)
                targets = tlsa.parse_specs(data.settings.targets) if data else default
            groups += zonefile.archive_groups(args.config_dir, args.all_versions, targets)
        if not args.items and not args.cert_name and not args.all_versions:
            for name in _lineages(args.config_dir, None):
                groups += zonefile.lineage_groups(_load(args.config_dir, name))
    except zonefile.PrintError as err:
        raise UsageError(str(err)) from None
    if args.json:
        print(json.dumps(zonefile.as_json(groups, args.ttl), indent=2, sort_keys=True))
    elif groups:
        print(zonefile.render(groups, args.ttl))
    return EXIT_OK


# verify -------------------------------------------------------------------


def _check_resolver(text: str | None) -> None:
    """A bad --resolver is a usage error, found before any lineage is looked at."""
    if text:
        try:
            parse_address(text)
        except ValueError as err:
            raise UsageError(f"--resolver: {err}") from None


def _verify(args: argparse.Namespace) -> int:
    if args.write_test:
        return _write_test(args)
    names = _lineages(args.config_dir, args.cert_name)
    if args.starttls and not args.connect:
        raise UsageError("--starttls needs --connect HOST:PORT")
    connect = None
    if args.connect:
        if len(names) != 1:
            raise UsageError("--connect checks one lineage: add --cert-name NAME")
        try:
            connect = verify.parse_endpoint(args.connect)
        except ValueError as err:
            raise UsageError(str(err)) from None
    _check_resolver(args.resolver)
    verdicts = []
    code = EXIT_OK
    for name in names:
        try:
            data = _load(args.config_dir, name)
            resolver = resolver_address(data.settings, args.resolver)
        except StateError as err:
            _error(str(err))
            code = EXIT_FAILED
            continue
        except (ValueError, ObserveError) as err:
            _error(_about(name, err))
            code = EXIT_FAILED
            continue
        timeout = args.timeout or verify.CONNECT_TIMEOUT
        verdict = verify.verify_lineage(data, resolver, connect, args.starttls, timeout)
        verdicts.append(verdict)
        if verdict.ok:
            if not args.json:
                _out(args, verify.summary(verdict))
                for note in verdict.notes:
                    _out(args, f"{name}: note: {note}")
        else:
            _error(f"{name}: {verdict.reason}")
            code = EXIT_FAILED
    if args.json:
        print(json.dumps([v.as_json() for v in verdicts], indent=2, sort_keys=True))
    elif not names:
        _out(args, f"no lineage is managed by certbot-dane in {args.config_dir}")
    return code


def _write_test(args: argparse.Namespace) -> int:
    """``verify --write-test``: the lineage's credentials add and delete a record."""
    for option, given in (
        ("--connect", args.connect), ("--starttls", args.starttls), ("--json", args.json)
    ):
        if given:
            raise UsageError(f"--write-test tests DNS only: drop {option}")
    if not args.cert_name:
        raise UsageError("--write-test tests one lineage: add --cert-name NAME")
    _check_resolver(args.resolver)
    (name,) = _lineages(args.config_dir, args.cert_name)
    data = _load(args.config_dir, name)
    try:
        writetest.run(
            args.config_dir,
            data,
            lambda line: _out(args, f"{name}: {line}"),
            args.timeout or writetest.WAIT_TIMEOUT,
            args.resolver,
        )
    except writetest.WriteTestFailed as err:
        _error(_about(name, err))
        return EXIT_FAILED
    return EXIT_OK


# reset --------------------------------------------------------------------


def _reset(args: argparse.Namespace) -> int:
    _check_resolver(args.resolver)
    (name,) = _lineages(args.config_dir, args.cert_name)
    data = _load(args.config_dir, name)
    try:
        resolver = resolver_address(data.settings, args.resolver)
        outcome = repin.reset(args.config_dir, name, resolver, time.time())
    except (repin.ResetRefused, ObserveError, danedir.DaneDirError, ValueError, OSError) as err:
        _error(_about(name, err))
        return EXIT_FAILED
    _out(args, outcome.message)
    return EXIT_OK


# import-alnitak -----------------------------------------------------------


def _import_alnitak(args: argparse.Namespace) -> int:
    try:
        config = alnitak.load(args.file)
    except alnitak.AlnitakConfigError as err:
        for line in err.lines:
            _error(line)
        return EXIT_USAGE
    print(alnitak.commands(config))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
