"""Deferred-check cost: ``certbot renew`` over lineages that are not due.

certbot calls the installer's ``generic_updates`` for every lineage on every
``certbot renew``, due or not; this is what the plugin costs there.

One certificate is issued by the lab's Pebble (``certbot run -i dane``), then
cloned into N lineages (archive/, live/ links, renewal conf; for the plugin
also its state file and dane directory, each clone with its own TLSA owner
``_25._tcp.NAME.``, its record published in the lab's zone). Two config
directories hold the same N clones: "without" names no installer, "with" says
``installer = dane``. After one untimed warm-up run each (certbot records the
ARI answer in the renewal conf), ``certbot renew --no-random-sleep-on-renew``
is timed REPEAT times per case, the cases in a shuffled order each time, and
the median is shown.

The clones' ``--dane-nameservers`` (two forwarders in front of the lab's
BIND, standing for two authoritative servers), ``--dane-resolver`` and
rfc2136 credentials point at counting forwarders in front of BIND and Unbound, so
the DNS column counts every DNS message the plugin sent during the timed
runs. A second count runs ``Engine.check_many`` in-process over the same
lineages with counting observer and store factories. The last column times
the plugin's part alone, in-process: the options checked and
``Engine.install``, per lineage.

The clones are settled (their records proven live, no alias) and keep the
default audit interval (``--dane-audit-interval`` 900 s). ``certbot renew``
is timed with the audit not due (audited just before each run) and due
(audited twice the interval ago): it never audits, either way.

A second table times the timer's check over the same lineages: the shipped
service's ``certbot-dane`` command line, REPEAT times per case, with the
audit due (one question per owner name and authoritative server, one state
write per lineage) and not due (no DNS, no write), and counts the DNS
messages through the forwarders and the state files written.

Usage: .venv/bin/python bench/renew_cost.py [--counts 1,50,200] [--repeat 5]
       [--pythonpath DIR]
"""
from __future__ import annotations

import argparse
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

from benchlib import (
    ROOT,
    CountingForwarder,
    Deployment,
    Lab,
    Measured,
    certbot_dane_cmd,
    clone_lineage,
    dane_settings_for,
    load_average,
    manage_clone,
    median,
    publish_records,
    run_measured,
    scratch_dir,
    set_audited,
    table,
)

from certbot_dane import state
from certbot_dane.engine import Engine, default_observer, default_store
from certbot_dane.settings import DEFAULT_AUDIT_INTERVAL
from tests.lab import pki

BASE = "base.dane.test"
TTL = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,50,200", help="lineage counts (default 1,50,200)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    parser.add_argument(
        "--pythonpath",
        help="put this directory first on certbot's PYTHONPATH: measure another copy of "
        "certbot_dane (e.g. an older engine.py) with the same harness",
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    root, tmp = scratch_dir("certbot-dane-bench-renew-", args.keep)
    loads = [load_average()]
    try:
        with Lab(root / "lab", ttl=TTL) as lab:
            rows, timer_rows = run(lab, root, counts, args.repeat, args.pythonpath)
    finally:
        loads.append(load_average())
        if tmp is not None:
            tmp.cleanup()
    print(
        f"certbot renew over lineages not due: median of {args.repeat} runs per case; "
        f"load average {loads[0]} before, {loads[1]} after"
    )
    print(
        table(
            [
                "lineages",
                "case",
                "wall s",
                "vs without",
                "CPU s",
                "vs without",
                "peak RSS MiB",
                "vs without",
                "state files written",
                "DNS msgs/lineage",
                "in-process queries/lineage",
                "in-process ms/lineage",
            ],
            rows,
        )
    )
    print()
    print(
        f"the timer's check ({' '.join(timer_args())}) over the same settled lineages: "
        f"median of {args.repeat} runs per case"
    )
    print(
        table(
            [
                "lineages",
                "audit",
                "wall s",
                "CPU s",
                "peak RSS MiB",
                "state files written",
                "DNS msgs/lineage",
                "to each authoritative server",
                "to the resolver",
            ],
            timer_rows,
        )
    )
    return 0


def run(
    lab: Lab, root: Path, counts: list[int], repeat: int, pythonpath: str | None
) -> tuple[list[list[object]], list[list[object]]]:
    base = Deployment(lab, root / "base", BASE, margin=0)
    print(f"issuing {BASE} with Pebble ...", file=sys.stderr, flush=True)
    base.issue()
    env = lab.certbot_env()
    if pythonpath:
        env["PYTHONPATH"] = str(Path(pythonpath).resolve())
    rows: list[list[object]] = []
    timer_rows: list[list[object]] = []
    with (
        CountingForwarder(lab.auth_address) as auth,
        CountingForwarder(lab.auth_address) as auth2,
        CountingForwarder(lab.resolver) as res,
    ):
        ini = root / "forwarded-rfc2136.ini"
        text = base.ini.read_text().replace(f"port = {lab.auth_port}", f"port = {auth.port}")
        pki.write_private(ini, text.encode("ascii"))
        published: set[object] = set()
        for n in counts:
            names = [f"c{i:03d}.dane.test" for i in range(n)]
            plain = root / f"without-{n}" / "config"
            dane = root / f"with-{n}" / "config"
            print(f"cloning {n} lineage(s) twice ...", file=sys.stderr, flush=True)
            records = set()
            renewal_keys: dict[str, dict[str, str]] = {}
            for config in (plain, dane):
                config.mkdir(parents=True)
                shutil.copytree(base.config / "accounts", config / "accounts")
            for name in names:
                clone_lineage(base.config, BASE, plain, name, live=1, dane=None)
                keys = {
                    "dane_tlsa": f"311:25@{name}",
                    "dane_resolver": res.address,
                    # two authoritative servers (both BIND, counted apart)
                    "dane_nameservers": f"{auth.address},{auth2.address}",
                    "dane_record_ttl": str(TTL),
                    "dns_rfc2136_credentials": str(ini),
                }
                clone_lineage(base.config, BASE, dane, name, live=1, dane=keys)
                renewal_keys[name] = keys
                settings = dane_settings_for(dane, keys, ini)
                records |= manage_clone(dane, name, settings, 1)
            fresh = records - published
            if fresh:
                publish_records(lab, fresh, TTL)
                published |= fresh
            print(f"warm-up runs for {n} ...", file=sys.stderr, flush=True)
            for config in (plain, dane):
                _renew(lab, config, env)
            auth.take()
            auth2.take()
            res.take()
            cases = ("without", "with", "due")
            runs: dict[str, list[Measured]] = {c: [] for c in cases}
            writes: dict[str, list[int]] = {c: [] for c in cases}
            messages: dict[str, int] = {c: 0 for c in cases}
            for rep in range(repeat):
                # A run right after one over the other config dir was measured
                # slower than one after the same dir: each repetition takes the
                # cases in another order, so that no case always comes first.
                order = list(cases)
                random.Random(rep).shuffle(order)
                for case in order:
                    config = plain if case == "without" else dane
                    if case != "without":
                        _date_audit(dane, names, due=case == "due")
                    before = _state_files(config)
                    runs[case].append(_renew(lab, config, env))
                    writes[case].append(_changed(before, _state_files(config)))
                    messages[case] += auth.take() + auth2.take() + res.take()
                print(
                    f"  {n}: run {rep + 1}: "
                    + ", ".join(f"{c} {runs[c][-1].wall:.2f} s" for c in cases),
                    file=sys.stderr,
                    flush=True,
                )
            in_process = _in_process_queries(dane, names)
            plugin_ms = _in_process_time(dane, renewal_keys, ini)
            base_wall = median(r.wall for r in runs["without"])
            base_cpu = median(r.cpu for r in runs["without"])
            base_rss = median(r.max_rss_kib for r in runs["without"])
            labels = {
                "without": "without plugin",
                "with": "installer = dane",
                "due": "installer = dane, audit due",
            }
            for case in cases:
                wall = median(r.wall for r in runs[case])
                cpu = median(r.cpu for r in runs[case])
                rss = median(r.max_rss_kib for r in runs[case])
                plugin = case != "without"
                rows.append(
                    [
                        n,
                        labels[case],
                        f"{wall:.2f}",
                        f"{(wall / base_wall - 1) * 100:+.1f} %" if plugin else "",
                        f"{cpu:.2f}",
                        f"{(cpu / base_cpu - 1) * 100:+.1f} %" if plugin else "",
                        f"{rss / 1024:.1f}",
                        f"{(rss / base_rss - 1) * 100:+.1f} %" if plugin else "",
                        f"{median(writes[case]):.0f} of {n}" if plugin else "",
                        f"{messages[case] / (n * repeat):.2f}" if plugin else "",
                        f"{in_process / n:.2f}" if case == "with" else "",
                        f"{plugin_ms:.2f}" if case == "with" else "",
                    ]
                )
            timer_rows += _timer_check(dane, names, repeat, [auth, auth2], res)
    return rows, timer_rows


def timer_args() -> list[str]:
    """The arguments the shipped service passes to certbot-dane."""
    service = ROOT / "packaging" / "systemd" / "certbot-dane.service"
    for line in service.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.partition("=")[2])[1:]
    raise SystemExit(f"{service}: no ExecStart")


def _timer_check(
    config: Path,
    names: list[str],
    repeat: int,
    auths: list[CountingForwarder],
    res: CountingForwarder,
) -> list[list[object]]:
    """The service's command over settled lineages, the audit due and not due."""
    argv = certbot_dane_cmd(config, *timer_args())
    rows = []
    n = len(names)
    for due in (True, False):
        runs: list[Measured] = []
        writes: list[int] = []
        sent = [0] * (len(auths) + 1)  # each authoritative server, then the resolver
        counters = [*auths, res]
        for _ in range(repeat):
            _date_audit(config, names, due)
            for counter in counters:
                counter.take()
            before = _state_files(config)
            done = run_measured(argv)
            if done.returncode != 0 or done.output:
                raise SystemExit(f"certbot-dane check: {done.output[-3000:]}")
            writes.append(_changed(before, _state_files(config)))
            sent = [total + counter.take() for total, counter in zip(sent, counters, strict=True)]
            runs.append(done)
        print(
            f"  timer check of {n}, audit {'due' if due else 'not due'}: "
            f"{median(r.wall for r in runs):.2f} s, {sent} msgs",
            file=sys.stderr,
            flush=True,
        )
        rows.append(
            [
                n,
                f"due (last {2 * DEFAULT_AUDIT_INTERVAL} s ago)" if due else "not due",
                f"{median(r.wall for r in runs):.2f}",
                f"{median(r.cpu for r in runs):.2f}",
                f"{median(r.max_rss_kib for r in runs) / 1024:.1f}",
                f"{median(writes):.0f} of {n}",
                f"{sum(sent) / (n * repeat):.2f}",
                " + ".join(f"{count / (n * repeat):.2f}" for count in sent[:-1]),
                f"{sent[-1] / (n * repeat):.2f}",
            ]
        )
    return rows


def _renew(lab: Lab, config: Path, env: dict[str, str]) -> Measured:
    done = run_measured(lab.certbot_cmd(config, "renew", "--no-random-sleep-on-renew"), env)
    if done.returncode != 0:
        raise SystemExit(f"certbot renew failed:\n{done.output[-3000:]}")
    if "No renewals were attempted" not in done.output:
        raise SystemExit(f"a lineage was due:\n{done.output[-3000:]}")
    return done


def _state_files(config: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of each state file: a save replaces the file."""
    stats = {p.name: p.stat() for p in state.state_dir(config).glob("*.json")}
    return {name: (st.st_ino, st.st_mtime_ns) for name, st in stats.items()}


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    return sum(1 for k, v in after.items() if before.get(k) != v)


def _date_audit(config: Path, names: list[str], due: bool) -> None:
    """Date every lineage's last audit: twice the interval ago (due), or now (not due)."""
    ago = 2 * DEFAULT_AUDIT_INTERVAL if due else 0
    set_audited(config, names, time.time() - ago)


def _in_process_time(config: Path, keys: dict[str, dict[str, str]], ini: Path) -> float:
    """Milliseconds per lineage of what the plugin does in ``certbot renew``: the
    options checked (``settings.from_options``, which reads the renewal conf and
    opens the record store) and ``Engine.install``. The median of 5 passes over
    every lineage, in this process: free of certbot's own cost and steadier than
    the difference of two ``certbot renew`` wall times."""
    passes = []
    for _ in range(5):
        began = time.perf_counter()
        for name, dane in keys.items():
            result = Engine(config).install(name, dane_settings_for(config, dane, ini))
            if not result.settled:
                raise SystemExit(f"{name}: not settled: {result}")
        passes.append((time.perf_counter() - began) / len(keys) * 1000)
    return median(passes)


def _in_process_queries(config: Path, names: list[str]) -> int:
    """DNS queries (observer) and store operations of one check of every lineage."""
    observers = []
    stores = []

    def observer(settings: state.Settings):  # type: ignore[no-untyped-def]
        obs = default_observer(settings)
        observers.append(obs)
        return obs

    def store(settings: state.Settings, config_dir: str):  # type: ignore[no-untyped-def]
        opened = default_store(settings, config_dir)
        stores.append(opened)
        return opened

    engine = Engine(config, clock=time.time, store_factory=store, observer_factory=observer)
    results = engine.check_many(names)
    bad = {k: v for k, v in results.items() if isinstance(v, Exception) or v.error}
    if bad:
        raise SystemExit(f"in-process check failed: {bad}")
    unsettled = [k for k, v in results.items() if not v.settled]  # type: ignore[union-attr]
    if unsettled:
        raise SystemExit(f"not settled: {unsettled[:5]}")
    return sum(o.queries for o in observers) + len(stores)


if __name__ == "__main__":
    sys.exit(main())
