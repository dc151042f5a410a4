"""Pending at scale: 200 lineages renewed at once, against one.

One certificate is issued by the lab's Pebble and renewed once with a new
key (``certbot certonly``, then ``certbot renew --force-renewal``, no
installer), so its archive holds versions 1 and 2. It is cloned into
lineages whose live/ shows version 2 while the plugin serves version 1: the
state after certbot renewed them all, before the plugin has looked. Each
clone has its own TLSA owner ``_25._tcp.NAME.``, whose version-1 record is in
the lab's zone beforehand. Nothing else is shared between clones.

The three checks of a rollover are timed, for one lineage alone and for N
(default 200) at once:

1. first check: notice the renewal, stage the files, publish the new record
   (an RFC 2136 update to the lab's BIND, waiting until BIND serves it),
   observe it on the authoritative server and through the resolver;
2. a check during the hold: observe only;
3. the check after the hold: observe, switch the links, delete the old
   record (RFC 2136 again).

Sets are fresh clones every time, checked in-process (``Engine.check_many``)
and through the command (``certbot-dane check``: a new process, which also
calls ``check_many``).
Records have a 30 s TTL and a 1 s hold margin, so the second check falls in
the hold. The plugin's DNS goes through counting forwarders (a child
process) in front of BIND and Unbound; ``--rtt-ms`` makes them hold every
answer that long, to stand in for a network between the host and its DNS
servers (on loopback an answer takes well under a millisecond).

Usage: .venv/bin/python bench/pending_scale.py [--lineages 200] [--repeat 3]
       [--rtt-ms 0,50]
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from benchlib import (
    ForwarderProcess,
    Lab,
    certbot_dane_cmd,
    clone_lineage,
    load_average,
    manage_clone,
    median,
    publish_records,
    run_measured,
    scratch_dir,
    table,
)

from certbot_dane import danedir, state
from certbot_dane.engine import Engine, Result
from certbot_dane.state import Settings
from tests.deployment import Deployment
from tests.lab import pki

BASE = "base.dane.test"
TTL = 30
MARGIN = 1
PHASES = ("1 publish", "2 hold", "3 switch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lineages", type=int, default=200, help="lineages at once (200)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh sets per case (3)")
    parser.add_argument("--rtt-ms", default="0,50", help="added DNS round trips, ms (0,50)")
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    args = parser.parse_args()
    rtts = [int(r) for r in args.rtt_ms.split(",")]
    vias = ["engine", "cli"]
    root, tmp = scratch_dir("certbot-dane-bench-scale-", args.keep)
    loads = [load_average()]
    try:
        with Lab(root / "lab", ttl=TTL) as lab:
            rows = run(lab, root, args.lineages, args.repeat, rtts, vias)
    finally:
        loads.append(load_average())
        if tmp is not None:
            tmp.cleanup()
    print(
        f"{args.lineages} pending lineages checked at once vs one: median of {args.repeat} "
        f"fresh sets each; load average {loads[0]} before, {loads[1]} after"
    )
    print(
        table(
            [
                "added RTT",
                "via",
                "check",
                "1 lineage s",
                f"{args.lineages} lineages s",
                "ratio",
                "DNS msgs/lineage",
                "not as expected",
            ],
            rows,
        )
    )
    return 0


class Set:
    """Fresh lineages in their own config dir, checked together."""

    def __init__(self, config: Path, names: list[str]) -> None:
        self.config = config
        self.names = names


class Timings:
    """Times, DNS messages and misbehaving lineages, per phase, way and size."""

    def __init__(self, fwd: ForwarderProcess, n: int) -> None:
        self.fwd = fwd
        self.n = n
        self.times: dict[tuple[str, str, int], list[float]] = {}
        self.messages: dict[tuple[str, str], int] = {}
        self.failed: dict[tuple[str, str], int] = {}

    def check(self, lineages: Set, via: str, phase: str) -> None:
        size = len(lineages.names)
        self.fwd.take()
        began = time.monotonic()
        _check(lineages, via)
        elapsed = time.monotonic() - began
        sent = sum(self.fwd.take())
        bad = _misbehaving(lineages, phase)
        self.times.setdefault((phase, via, size), []).append(elapsed)
        if size == self.n:
            self.messages[(phase, via)] = self.messages.get((phase, via), 0) + sent
            self.failed[(phase, via)] = self.failed.get((phase, via), 0) + bad
        print(
            f"  {phase} {via} {size}: {elapsed:.3f} s, {sent} msgs, {bad} not as expected",
            file=sys.stderr,
            flush=True,
        )


def run(
    lab: Lab, root: Path, n: int, repeat: int, rtts: list[int], vias: list[str]
) -> list[list[object]]:
    base = Deployment(lab, root / "base", BASE, margin=MARGIN)
    print(f"issuing and renewing {BASE} with Pebble ...", file=sys.stderr, flush=True)
    base.certbot("certonly", *base.dns_args(), "-d", BASE)
    base.certbot("renew", "--force-renewal", "--no-random-sleep-on-renew")
    rows: list[list[object]] = []
    for rtt in rtts:
        with ForwarderProcess([lab.auth_address, lab.resolver], delay=rtt / 1000) as fwd:
            auth, resolver = fwd.addresses()
            ini = root / f"rtt{rtt}.ini"
            text = base.ini.read_text().replace(
                f"port = {lab.auth_port}", f"port = {fwd.ports[0]}"
            )
            pki.write_private(ini, text.encode("ascii"))
            settings = functools.partial(_settings, auth=auth, resolver=resolver, ini=ini)
            # One untimed lineage first: imports and first connections are
            # paid here, not by whichever set is timed first.
            _check(_make_set(lab, base, root, f"r{rtt}-warm-up", 1, settings), vias[0])
            timings = Timings(fwd, n)
            for rep in range(repeat):
                print(f"RTT {rtt} ms, round {rep + 1}: cloning ...", file=sys.stderr, flush=True)
                sets = [
                    (via, _make_set(lab, base, root, f"r{rtt}-{rep}-{i}-{size}", size, settings))
                    for i, via in enumerate(vias)
                    for size in (1, n)
                ]
                # Each set's first two checks back to back (the second falls
                # inside the hold), then the third once every hold is over.
                for via, lineages in sets:
                    for phase in PHASES[:2]:
                        timings.check(lineages, via, phase)
                _sleep_out_holds(lineages for _, lineages in sets)
                for via, lineages in sets:
                    timings.check(lineages, via, PHASES[2])
            for via in vias:
                for phase in PHASES:
                    one = median(timings.times[(phase, via, 1)])
                    many = median(timings.times[(phase, via, n)])
                    rows.append(
                        [
                            f"{rtt} ms",
                            _label(via),
                            phase,
                            f"{one:.3f}",
                            f"{many:.3f}",
                            f"{many / one:.1f}x",
                            f"{timings.messages[(phase, via)] / (n * repeat):.1f}",
                            timings.failed[(phase, via)],
                        ]
                    )
    return rows


def _label(via: str) -> str:
    return "certbot-dane check" if via == "cli" else "Engine.check_many"


def _settings(config: Path, name: str, *, auth: str, resolver: str, ini: Path) -> Settings:
    return Settings(
        targets=f"311:25@{name}",
        directory=str(config / "dane"),
        store="rfc2136",
        credentials=str(ini),
        resolver=resolver,
        nameservers=auth,
        record_ttl=TTL,
        hold_margin=MARGIN,
    )


def _make_set(
    lab: Lab,
    base: Deployment,
    root: Path,
    label: str,
    size: int,
    settings: Callable[[Path, str], Settings],
) -> Set:
    config = root / label / "config"
    config.mkdir(parents=True)
    names = [f"{label}-{i:03d}.dane.test" for i in range(size)]
    records = set()
    now = time.time()
    for name in names:
        clone_lineage(base.config, BASE, config, name, live=2, dane=None)
        records |= manage_clone(config, name, settings(config, name), served=1, now=now)
    publish_records(lab, records, TTL)
    return Set(config, names)


def _check(lineages: Set, via: str) -> None:
    """One check of every lineage of the set, in-process or by the command."""
    if via == "cli":
        done = run_measured(certbot_dane_cmd(lineages.config, "-q", "check"))
        if done.returncode != 0:
            print(done.output[-2000:], file=sys.stderr)
        return
    results = Engine(lineages.config).check_many(lineages.names)
    for name, result in results.items():
        if not isinstance(result, Result) or result.error:
            print(f"  {name}: {result}", file=sys.stderr)


def _misbehaving(lineages: Set, phase: str) -> int:
    """Lineages not where this check should leave them (or with an error)."""
    bad = 0
    for name in lineages.names:
        data = state.load(lineages.config, name)
        assert data is not None
        s = data.rollover
        served = danedir.served_version(data.settings.directory, name)
        if s.last_error is not None:
            bad += 1
        elif phase == PHASES[2]:
            done = served == 2 and s.pending is None and s.served is not None
            bad += not (done and s.owned == s.served.records)
        else:
            bad += not (served == 1 and s.pending is not None and s.visible_since is not None)
    return bad


def _sleep_out_holds(sets: Iterable[Set]) -> None:
    """Sleep until every lineage's hold is over."""
    ends = []
    for lineages in sets:
        for name in lineages.names:
            data = state.load(lineages.config, name)
            assert data is not None
            s = data.rollover
            if s.visible_since is not None:
                ends.append(s.visible_since + (s.hold_ttl or 0) + data.settings.hold_margin)
    wait = max(ends, default=time.time()) - time.time() + 0.5
    if wait > 0:
        time.sleep(wait)


if __name__ == "__main__":
    sys.exit(main())
