"""Rollover latency: from the end of a renewal to the switch, against the
lower bound.

For each record TTL T (a lab whose zone TTL and negative TTL are T), and for
``--dane-hold-margin 0`` and the default margin: issue a certificate with
``certbot run -i dane --dane-record-ttl T``, serve it from the dane directory
(a TLS service that re-reads it per connection), probe it every 300 ms with
openssl's DANE check against the validated TLSA RRset, force a renewal with a
new key, then run ``certbot-dane check`` every CHECK_INTERVAL seconds until
the links serve the new version. A poller asks BIND and Unbound about the
TLSA owner every 0.1 s throughout.

All times are seconds after ``certbot renew`` returned (the end of the
renewal); negative when it happened inside it:

* visible: the poller first saw the new record signed on the authoritative
  server (the lab has one: BIND);
* validated: Unbound first returned it with AD;
* lower bound = max(visible + T, validated): no correct switch can come
  earlier, since a cache may have fetched the old RRset just before the new
  record appeared and keeps it T seconds, and the resolver must validate the
  new record;
* switch: the "switched" event of the plugin's timeline.

Two more cases (``--cases``), each at margin 0:

* ``cname``: the TLSA owner is a CNAME to a name in a second signed zone of
  the lab (``alias.test.``): the records go to the target, the poller asks
  BIND at the target and Unbound at the owner (as a DANE client does), and
  the table is the one above.
* ``issuers``: ``--dane-tlsa 311:25,211:25 --dane-issuers bundle.pem``.
  Pebble is restarted for a new intermediate, which goes into the bundle;
  checks run until its record is live; then the renewal with a new key,
  whose certificate chains to it. Times are seconds after the end of that
  renewal; "within" says whether the switch came during ``certbot renew``.

With ``--timer`` the checks are run as the shipped systemd units run them
instead of every CHECK_INTERVAL seconds: the service's ExecStart (``certbot-dane
--quiet check --finish-within N``) at each elapse of the timer (OnCalendar
every 5 minutes, plus its RandomizedDelaySec drawn anew for each elapse), an
elapse skipped while the previous run still runs, as systemd does. The timer
runs all along; each lineage is renewed ``--runs`` times, each renewal
started at a random point of the timer's period (one in each of ``--runs``
equal slices of it, so the phases cover the period). Reported per renewal:
where in the period it started, when the next timer run came, the switch's
delay after the end of the hold the plugin computed, which run switched, and
the probe's failures.

Usage: .venv/bin/python bench/latency.py [--ttls 30,60,120] [--interval 5]
       [--quick]   (TTLs 5 and 10: a smoke run)
       [--cases plain,cname,issuers]   (default: plain)
       .venv/bin/python bench/latency.py --timer [--ttls 60,300] [--margins 0,default]
       [--runs 4 | --phases S,S] [--seed N] [--quick]   (--quick: a tenth of the timer's
       times, TTLs 5 and 30)
"""
from __future__ import annotations

import argparse
import configparser
import math
import os
import random
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.rdatatype
from benchlib import ROOT, Deployment, Lab, certbot_dane_cmd, load_average, scratch_dir, table

from certbot_dane import state, tlsa
from certbot_dane.engine import policy_of
from certbot_dane.rollover import hold_end
from certbot_dane.settings import DEFAULT_HOLD_MARGIN
from tests.lab.probe import Prober, dane_check
from tests.lab.service import DaneService

CHECK_INTERVAL = 5.0
POLL_INTERVAL = 0.1
TAIL = 3.0  # seconds probed after the switch
CASES = ("plain", "cname", "issuers")
ALIAS_ZONE = "alias.test."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ttls", help="record TTLs (default 30,60,120; with --timer 60,300)"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke run: TTLs 5 and 10 (with --timer: 5 and 30, and a tenth of the timer's "
        "times)",
    )
    parser.add_argument(
        "--interval", type=float, default=CHECK_INTERVAL,
        help=f"seconds between two certbot-dane check runs (default {CHECK_INTERVAL:.0f})",
    )
    parser.add_argument(
        "--cases", default="plain",
        help="comma-separated: plain (margin 0 and the default), cname (owner behind a "
        "CNAME, margin 0), issuers (311:25,211:25 with the intermediate in an issuer "
        "bundle) (default: plain)",
    )
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    parser.add_argument(
        "--timer", action="store_true",
        help="check as the shipped certbot-dane.timer and .service do (default TTLs 60,300)",
    )
    parser.add_argument(
        "--margins", default="0,default",
        help="with --timer: hold margins, 'default' for the plugin's (default 0,default)",
    )
    parser.add_argument(
        "--runs", type=int, default=4, help="with --timer: renewals per TTL and margin (4)"
    )
    parser.add_argument("--seed", type=int, help="with --timer: seed of the random phases")
    parser.add_argument(
        "--arm", action="store_true",
        help="with --timer: checks armed at the hold's end (systemd-run) run too, by "
        "tests/bin/fake-systemd-run, which runs them after the delay as a transient timer "
        "would (the lab has no systemd)",
    )
    parser.add_argument(
        "--phases",
        help="with --timer: start the renewals at these seconds of the period instead "
        "(comma-separated; replaces --runs)",
    )
    args = parser.parse_args()
    if args.timer:
        return timer_main(args)
    ttls = [5, 10] if args.quick else [int(t) for t in (args.ttls or "30,60,120").split(",")]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    root, tmp = scratch_dir("certbot-dane-bench-latency-", args.keep)
    loads = [load_average()]
    rows: dict[str, list[list[object]]] = {case: [] for case in cases}
    try:
        for ttl in ttls:
            zones = (ALIAS_ZONE,) if "cname" in cases else ()
            with Lab(root / f"lab-{ttl}", ttl=ttl, extra_zones=zones) as lab:
                if "plain" in cases:
                    for margin in (0, None):
                        outcome = measure(lab, root, ttl, margin, args.interval)
                        rows["plain"].append(outcome.row(args.interval))
                if "cname" in cases:
                    outcome = measure(lab, root, ttl, 0, args.interval, cname=True)
                    rows["cname"].append(outcome.row(args.interval))
                if "issuers" in cases:
                    # Last: it restarts Pebble, which forgets every ACME account.
                    rows["issuers"].append(measure_issuers(lab, root, ttl, args.interval).row())
    finally:
        loads.append(load_average())
        if tmp is not None:
            tmp.cleanup()
    ok = True
    for case in cases:
        print(
            f"{TITLES[case]}; check every {args.interval:g} s; load average {loads[0]} "
            f"before, {loads[1]} after"
        )
        print(table(HEADERS[case], rows[case]))
        print()
        ok = ok and all(row[-1] == 0 for row in rows[case])
    return 0 if ok else 1


TITLES = {
    "plain": "rollover latency, seconds after the end of the renewal",
    "cname": (
        f"rollover latency, TLSA owner behind a CNAME into {ALIAS_ZONE}, margin 0, seconds "
        "after the end of the renewal"
    ),
    "issuers": (
        "zero-wait rollover, 311:25,211:25 with the new intermediate in the issuer bundle, "
        "seconds after the end of the renewal"
    ),
}
_LATENCY = [
    "TTL", "margin", "visible", "validated", "lower bound", "switch", "ratio", "target", "met",
    "probes", "probe failures",
]
HEADERS = {
    "plain": _LATENCY,
    "cname": _LATENCY,
    "issuers": [
        "TTL", "bundle live after", "renewal took", "switch", "within the renewal", "checks",
        "probes", "probe failures",
    ],
}


@dataclass
class Outcome:
    ttl: int
    margin: int
    default_margin: bool
    visible: float
    validated: float
    switch: float
    probes: int
    failures: int

    @property
    def bound(self) -> float:
        return max(self.visible + self.ttl, self.validated)

    def row(self, interval: float) -> list[object]:
        target = 1.2 * self.bound + interval
        margin = f"{self.margin} (default)" if self.default_margin else str(self.margin)
        met = ("yes" if self.switch <= target else "NO") if self.margin == 0 else "-"
        return [
            self.ttl,
            margin,
            _seconds(self.visible),
            _seconds(self.validated),
            _seconds(self.bound),
            _seconds(self.switch),
            f"{self.switch / self.bound:.2f}",
            f"<= {target:.1f}" if self.margin == 0 else "-",
            met,
            self.probes,
            self.failures,
        ]


def _seconds(value: float) -> str:
    return f"{round(value, 1) + 0.0:.1f}"  # + 0.0: no "-0.0"


class Poller:
    """Samples the TLSA RRset at BIND (signed?) and through Unbound (AD?).

    ``target``: where BIND keeps the records when the owner is an alias;
    Unbound is asked at the owner, as a DANE client asks.
    """

    def __init__(self, lab: Lab, owner: str, target: str | None = None) -> None:
        self.lab = lab
        self.owner = owner
        self.target = target or owner
        self.samples: list[tuple[float, frozenset[str], bool, frozenset[str], bool]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.time()
            try:
                bind = self.lab.auth_query(self.target, "TLSA")
                resolver = self.lab.resolver_query(self.owner, "TLSA")
            except Exception:  # noqa: BLE001 - a lost sample, not a lost run
                self._stopping.wait(POLL_INTERVAL)
                continue
            b, signed = _tlsa(bind)
            r, _ = _tlsa(resolver)
            self.samples.append((began, b, signed, r, bool(resolver.flags & dns.flags.AD)))
            self._stopping.wait(max(0.0, POLL_INTERVAL - (time.time() - began)))

    def first(self, new: str, where: str) -> float:
        for when, bind, signed, resolver, ad in self.samples:
            if where == "bind" and new in bind and signed:
                return when
            if where == "resolver" and new in resolver and ad:
                return when
        raise RuntimeError(f"the poller never saw {new} at {where}")


def _tlsa(response: object) -> tuple[frozenset[str], bool]:
    records: set[str] = set()
    signed = False
    for rrset in response.answer:  # type: ignore[attr-defined]
        if rrset.rdtype == dns.rdatatype.TLSA:
            records |= {rd.to_text() for rd in rrset}
        elif rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.TLSA:
            signed = True
    return frozenset(records), signed


def measure(
    lab: Lab, root: Path, ttl: int, margin: int | None, interval: float, cname: bool = False
) -> Outcome:
    label = f"t{ttl}-m{'default' if margin is None else margin}" + ("-cname" if cname else "")
    host = f"{label}.dane.test"
    dep = Deployment(lab, root / label, host, margin=margin or 0)
    target = f"_tlsa.{label}.{ALIAS_ZONE}" if cname else dep.owner
    if cname:
        lab.publish(dep.owner, "CNAME", target)
    args = dep.dane_args()
    if margin is None:
        cut = args.index("--dane-hold-margin")
        del args[cut : cut + 2]
    print(f"T={ttl} margin={margin}: issuing {host} ...", file=sys.stderr, flush=True)
    dep.certbot("run", *dep.dns_args(), *args, "-d", host)
    with DaneService(dep.dane_dir()) as service:
        deadline = time.monotonic() + 2 * ttl + 60
        while not dane_check(host, service.port, lab.resolver, dep.owner).ok:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}: the first record never validated")
            time.sleep(0.3)
        old = dep.authoritative_records(target)
        with Prober(host, service.port, lab.resolver, dep.owner, interval_ms=300) as prober:
            with Poller(lab, dep.owner, target) as poller:
                dep.renew()
                ended = time.time()
                print(f"  renewed; checking every {interval:g} s", file=sys.stderr, flush=True)
                _check_until_switched(dep, interval, limit=3 * ttl + 300)
                time.sleep(TAIL)
            prober.stop()
        new = next(iter(dep.authoritative_records(target) - old))
    data = state.load(dep.config, host)
    assert data is not None
    switched = max(e.time for e in data.timeline if e.what == "switched")
    outcome = Outcome(
        ttl=ttl,
        margin=DEFAULT_HOLD_MARGIN if margin is None else margin,
        default_margin=margin is None,
        visible=poller.first(new, "bind") - ended,
        validated=poller.first(new, "resolver") - ended,
        switch=switched - ended,
        probes=len(prober.samples),
        failures=len(prober.failures),
    )
    print(f"  {outcome}", file=sys.stderr, flush=True)
    for sample in prober.failures[:5]:
        print(f"  probe failure: {sample.reason}", file=sys.stderr)
    return outcome


@dataclass
class ZeroWait:
    ttl: int
    bundle_live: float  # seconds from the bundle change to its record proven live
    renewal: float  # seconds certbot renew took
    switch: float  # after the end of the renewal
    within: bool  # the switch came during certbot renew
    checks: int  # certbot-dane check runs between the renewal and the switch
    probes: int
    failures: int

    def row(self) -> list[object]:
        return [
            self.ttl,
            _seconds(self.bundle_live),
            _seconds(self.renewal),
            _seconds(self.switch),
            "yes" if self.within else "NO",
            self.checks,
            self.probes,
            self.failures,
        ]


def measure_issuers(lab: Lab, root: Path, ttl: int, interval: float) -> ZeroWait:
    """A new-key renewal whose intermediate is bundled and live beforehand."""
    label = f"t{ttl}-issuers"
    host = f"{label}.dane.test"
    dep = Deployment(lab, root / label, host, margin=0, tlsa="311:25,211:25")
    bundle = dep.root / "issuers.pem"
    bundle.write_text(lab.pebble_intermediate(), encoding="ascii")
    print(f"T={ttl} issuers: issuing {host} ...", file=sys.stderr, flush=True)
    dep.certbot("run", *dep.dns_args(), *dep.dane_args(), "--dane-issuers", str(bundle),
                "-d", host)
    with DaneService(dep.dane_dir()) as service:
        deadline = time.monotonic() + 2 * ttl + 60
        while not dane_check(host, service.port, lab.resolver, dep.owner).ok:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}: the first record never validated")
            time.sleep(0.3)
        with Prober(host, service.port, lab.resolver, dep.owner, interval_ms=300) as prober:
            new = lab.restart_pebble()
            dep.forget_acme_account()
            bundle.write_text(bundle.read_text(encoding="ascii") + new, encoding="ascii")
            changed = time.time()
            print("  new intermediate bundled; checking until it is live", file=sys.stderr)
            _check_until_settled(dep, interval, limit=3 * ttl + 300)
            live = max(e.time for e in _timeline(dep) if e.what == "live") - changed
            began = time.time()
            dep.renew()
            ended = time.time()
            _check_until_switched(dep, interval, limit=3 * ttl + 300)
            time.sleep(TAIL)
            prober.stop()
    switched = max(e.time for e in _timeline(dep) if e.what == "switched")
    served = state.load(dep.config, host)
    assert served is not None and served.rollover.served is not None
    issuer = tlsa.load_pem_chain(new.encode())[0]
    assert any(r.usage == 2 and r.data == tlsa.association(issuer, 1, 1)
               for r in served.rollover.served.records), "the renewal did not use the new CA"
    outcome = ZeroWait(
        ttl=ttl,
        bundle_live=live,
        renewal=ended - began,
        switch=switched - ended,
        within=began <= switched <= ended,
        checks=sum(1 for when, _ in dep.checks if began <= when <= switched),
        probes=len(prober.samples),
        failures=len(prober.failures),
    )
    print(f"  {outcome}", file=sys.stderr, flush=True)
    for sample in prober.failures[:5]:
        print(f"  probe failure: {sample.reason}", file=sys.stderr)
    return outcome


def _timeline(dep: Deployment) -> list[state.Event]:
    data = state.load(dep.config, dep.host)
    assert data is not None
    return data.timeline


def _check_until_settled(dep: Deployment, interval: float, limit: float) -> None:
    """Checks until nothing is pending or unproven (wanted records all live)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        began = time.monotonic()
        _run_check(dep)
        data = state.load(dep.config, dep.host)
        assert data is not None
        s = data.rollover
        if s.pending is None and s.wanted() <= s.live and not s.owned - s.wanted():
            return
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    raise RuntimeError(f"{dep.host}: not settled within {limit:.0f} s")


def _run_check(dep: Deployment) -> None:
    dep.checks.append((time.time(), None))  # type: ignore[arg-type]
    done = subprocess.run(
        certbot_dane_cmd(dep.config, "-q", "check"),
        capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        print(done.stdout + done.stderr, file=sys.stderr)


def _check_until_switched(dep: Deployment, interval: float, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        began = time.monotonic()
        data = state.load(dep.config, dep.host)
        assert data is not None
        s = data.rollover
        if s.pending is None and s.served is not None and s.served.number == 2:
            return
        _run_check(dep)
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    raise RuntimeError(f"{dep.host}: no switch within {limit:.0f} s")


# The shipped timer ----------------------------------------------------------------

SERVICE = ROOT / "packaging" / "systemd" / "certbot-dane.service"
TIMER = ROOT / "packaging" / "systemd" / "certbot-dane.timer"


@dataclass(frozen=True)
class Shipped:
    """What the shipped units run, and when."""

    args: list[str]  # the ExecStart arguments after the program
    period: float  # seconds between two calendar elapses
    random_delay: float  # RandomizedDelaySec

    @classmethod
    def read(cls) -> Shipped:
        service = _unit(SERVICE)["Service"]
        timer = _unit(TIMER)["Timer"]
        argv = shlex.split(service["ExecStart"])
        every = re.fullmatch(r"\*:0/(\d+)", timer["OnCalendar"])
        if every is None:
            raise SystemExit(f"{TIMER}: OnCalendar={timer['OnCalendar']} is not *:0/N")
        delay = re.fullmatch(r"(\d+)s?", timer.get("RandomizedDelaySec", "0"))
        if delay is None:
            raise SystemExit(f"{TIMER}: RandomizedDelaySec is not in seconds")
        return cls(argv[1:], 60.0 * int(every[1]), float(delay[1]))

    def scaled(self, factor: float) -> Shipped:
        """The same timer, every time (period, delay, --finish-within) times ``factor``."""
        args = list(self.args)
        at = args.index("--finish-within") + 1
        args[at] = f"{float(args[at]) * factor:g}"
        return Shipped(args, self.period * factor, self.random_delay * factor)


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


@dataclass
class CheckRun:
    """One start of the service: a certbot-dane process."""

    start: float
    end: float | None = None
    returncode: int | None = None
    output: str = ""


class TimerSim:
    """certbot-dane.timer and .service as systemd runs them, for one config dir.

    Elapses come at every multiple of the period on the wall clock (as
    ``OnCalendar=*:0/5`` does) plus a delay drawn anew for each elapse
    (``RandomizedDelaySec``); an elapse while the previous run still runs
    starts nothing (systemd merges it into the running start job).
    """

    def __init__(self, config: Path, shipped: Shipped, rng: random.Random) -> None:
        self.argv = certbot_dane_cmd(config, *shipped.args)
        self.shipped = shipped
        self.rng = rng
        self.runs: list[CheckRun] = []
        self.skipped: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TimerSim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # our own child, by its pid
            self._proc.wait(timeout=30)

    def _loop(self) -> None:
        period = self.shipped.period
        point = math.ceil(time.time() / period) * period
        while True:
            elapse = point + self.rng.uniform(0, self.shipped.random_delay)
            if self._stopping.wait(max(0.0, elapse - time.time())):
                return
            if self._proc is not None and self._proc.poll() is None:
                self.skipped.append(elapse)
            else:
                self._start()
            point += period

    def _start(self) -> None:
        run = CheckRun(time.time())
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._proc = proc
        self.runs.append(run)
        threading.Thread(target=self._reap, args=(proc, run), daemon=True).start()

    @staticmethod
    def _reap(proc: subprocess.Popen[str], run: CheckRun) -> None:
        run.output, _ = proc.communicate()
        run.end = time.time()
        run.returncode = proc.returncode
        if run.returncode or run.output:
            print(f"  timer run exited {run.returncode}: {run.output.strip()}", file=sys.stderr)

    def started_after(self, moment: float) -> CheckRun | None:
        return next((r for r in self.runs if r.start > moment), None)

    def running_at(self, moment: float) -> CheckRun | None:
        return next(
            (r for r in self.runs if r.start <= moment and (r.end is None or moment <= r.end)),
            None,
        )


@dataclass
class TimerOutcome:
    ttl: int
    margin: int
    default_margin: bool
    phase: float  # renewal start, seconds after the calendar point of the period
    next_run: float  # the first timer run after the renewal, seconds after its end
    hold: float  # hold end, seconds after the renewal's end
    switch: float  # seconds after the hold end
    by: float  # start of the run that switched, seconds after the hold end
    bound: float  # switch minus max(visible + T, validated), seconds
    probes: int
    failures: int

    def row(self) -> list[object]:
        margin = f"{self.margin} (default)" if self.default_margin else str(self.margin)
        return [
            self.ttl,
            margin,
            f"{self.phase:.0f}",
            f"{self.next_run:.0f}",
            f"{self.hold:.1f}",
            _seconds(self.switch),
            "armed" if math.isnan(self.by) else f"{self.by:+.0f}",
            _seconds(self.bound),
            "yes" if self.switch <= TIMER_TARGET else "NO",
            self.probes,
            self.failures,
        ]


#: The switch should come this soon after the hold ends (seconds).
TIMER_TARGET = 10.0


def timer_main(args: argparse.Namespace) -> int:
    if args.arm:
        # certbot renew and the service's runs inherit it (see certbot_dane/wakeup.py).
        fake = Path(__file__).resolve().parent.parent / "tests" / "bin" / "fake-systemd-run"
        os.environ["CERTBOT_DANE_SYSTEMD_RUN"] = str(fake)
    shipped = Shipped.read()
    if args.quick:  # a smoke run: a tenth of every time
        shipped = shipped.scaled(0.1)
    ttls = [int(t) for t in (args.ttls or ("5,30" if args.quick else "60,300")).split(",")]
    margins = [None if m == "default" else int(m) for m in args.margins.split(",")]
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    root, tmp = scratch_dir("certbot-dane-bench-timer-", args.keep)
    loads = [load_average()]
    rows: list[list[object]] = []
    timers: list[TimerSim] = []
    try:
        for ttl in ttls:
            with Lab(root / f"lab-{ttl}", ttl=ttl) as lab:
                for margin in margins:
                    phases = _phases(args, shipped.period, rng)
                    outcomes, timer = measure_timer(lab, root, ttl, margin, shipped, phases, rng)
                    rows += [o.row() for o in outcomes]
                    timers.append(timer)
    finally:
        loads.append(load_average())
        if tmp is not None:
            tmp.cleanup()
    runs = [r for t in timers for r in t.runs]
    longest = max((r.end - r.start for r in runs if r.end is not None), default=0.0)
    print(
        f"rollover latency with the shipped timer ({' '.join(shipped.args)} every "
        f"{shipped.period:.0f} s + up to {shipped.random_delay:.0f} s); seed {seed}; "
        f"{len(runs)} timer runs, {sum(len(t.skipped) for t in timers)} elapses skipped, "
        f"longest run {longest:.1f} s; load average {loads[0]} before, {loads[1]} after"
    )
    print(
        table(
            [
                "TTL",
                "margin",
                "renewal at s of period",
                "next run s",
                "hold end s",
                "switch after hold end s",
                "switching run started s",
                "switch after lower bound s",
                f"<= {TIMER_TARGET:.0f} s",
                "probes",
                "probe failures",
            ],
            rows,
        )
    )
    return 0 if all(row[-1] == 0 for row in rows) else 1


def measure_timer(
    lab: Lab,
    root: Path,
    ttl: int,
    margin: int | None,
    shipped: Shipped,
    phases: list[float],
    rng: random.Random,
) -> tuple[list[TimerOutcome], TimerSim]:
    label = f"timer-t{ttl}-m{'default' if margin is None else margin}"
    host = f"{label}.dane.test"
    dep = Deployment(lab, root / label, host, margin=margin or 0)
    args = dep.dane_args()
    if margin is None:
        cut = args.index("--dane-hold-margin")
        del args[cut : cut + 2]
    print(f"T={ttl} margin={margin}: issuing {host} ...", file=sys.stderr, flush=True)
    dep.certbot("run", *dep.dns_args(), *args, "-d", host)
    outcomes = []
    with DaneService(dep.dane_dir()) as service, TimerSim(dep.config, shipped, rng) as timer:
        _wait_validated(dep, lab, service.port, ttl)
        for phase in phases:
            outcome = _timer_renewal(dep, lab, service.port, timer, ttl, margin, phase)
            print(f"  {outcome}", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    return outcomes, timer


def _phases(args: argparse.Namespace, period: float, rng: random.Random) -> list[float]:
    """Where in the period each renewal starts: given, or one at random in each of
    ``--runs`` equal slices of the period."""
    if args.phases:
        return [float(p) for p in args.phases.split(",")]
    runs = args.runs
    return [rng.uniform(i * period / runs, (i + 1) * period / runs) for i in range(runs)]


def _wait_validated(dep: Deployment, lab: Lab, port: int, ttl: int) -> None:
    deadline = time.monotonic() + 2 * ttl + 60
    while not dane_check(dep.host, port, lab.resolver, dep.owner).ok:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dep.host}: the served record never validated")
        time.sleep(0.3)


def _timer_renewal(
    dep: Deployment,
    lab: Lab,
    port: int,
    timer: TimerSim,
    ttl: int,
    margin: int | None,
    phase: float,
) -> TimerOutcome:
    """One renewal started ``phase`` seconds after a calendar point; until its switch."""
    period = timer.shipped.period
    served = dep.served()
    assert served is not None
    start = math.ceil((time.time() + 5 - phase) / period) * period + phase
    print(
        f"  T={ttl} margin={margin}: renewal at {phase:.0f} s of the period, "
        f"in {start - time.time():.0f} s",
        file=sys.stderr,
        flush=True,
    )
    time.sleep(max(0.0, start - time.time()))
    old = dep.authoritative_records()
    with Prober(dep.host, port, lab.resolver, dep.owner, interval_ms=300) as prober:
        with Poller(lab, dep.owner) as poller:
            began = time.time()
            dep.renew()
            ended = time.time()
            end = _hold_end(dep)
            limit = end + 2 * period + 60
            while dep.served() != served + 1:
                if time.time() > limit:
                    raise RuntimeError(f"{dep.host}: no switch by {limit - ended:.0f} s")
                time.sleep(0.2)
            _wait_settled(dep, limit)
            time.sleep(TAIL)
        prober.stop()
    new = next(iter(dep.authoritative_records() - old))
    data = state.load(dep.config, dep.host)
    assert data is not None
    switched = max(e.time for e in data.timeline if e.what == "switched")
    by = timer.running_at(switched)
    following = timer.started_after(ended)
    try:
        bound = max(poller.first(new, "bind") + ttl, poller.first(new, "resolver"))
    except RuntimeError:
        bound = float("nan")
    return TimerOutcome(
        ttl=ttl,
        margin=DEFAULT_HOLD_MARGIN if margin is None else margin,
        default_margin=margin is None,
        phase=began % period,
        next_run=(following.start - ended) if following else float("nan"),
        hold=end - ended,
        switch=switched - end,
        by=(by.start - end) if by else float("nan"),
        bound=switched - bound,
        probes=len(prober.samples),
        failures=len(prober.failures),
    )


def _hold_end(dep: Deployment) -> float:
    """The end of the hold, as the plugin computes it, once the records are visible."""
    deadline = time.monotonic() + 60
    while True:
        data = state.load(dep.config, dep.host)
        assert data is not None
        s = data.rollover
        if s.visible_since is not None:
            return hold_end(s, None, policy_of(data.settings))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dep.host}: the new records never became visible")
        time.sleep(0.2)


def _wait_settled(dep: Deployment, limit: float) -> None:
    """The switching check also retires the old record: wait for that too."""
    while True:
        data = state.load(dep.config, dep.host)
        assert data is not None
        s = data.rollover
        if s.pending is None and s.served is not None and s.owned == s.served.records:
            return
        if time.time() > limit:
            raise RuntimeError(f"{dep.host}: not settled after the switch")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
