"""A small BIND 9 primary for one unsigned zone, with the TSIG keys and the
update-policy a test asks for: what a test needs when the lab's server (one
key that may change anything) cannot show a case."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from .lab import LOOPBACK, find_tool
from .process import Daemon, free_port


@contextmanager
def plain_bind(
    root: Path, zone: str, keys: Mapping[str, tuple[str, str]], update_policy: str
) -> Iterator[int]:
    """Run BIND for ``zone`` in ``root``; yield its port.

    ``keys`` maps a key name to its (algorithm, secret); ``update_policy`` is
    the body of the zone's ``update-policy { ... };``.
    """
    zone = zone.rstrip(".")
    port = free_port(set(), udp=True)
    key_conf = "".join(
        f'key "{name}" {{ algorithm {algorithm}; secret "{secret}"; }};\n'
        for name, (algorithm, secret) in keys.items()
    )
    (root / f"{zone}.zone").write_text(
        f"$TTL 60\n@ IN SOA ns.{zone}. host.{zone}. 1 60 60 60 60\n"
        f"@ IN NS ns.{zone}.\nns IN A {LOOPBACK}\n"
    )
    (root / "named.conf").write_text(
        f"""options {{
    directory "{root}";
    pid-file "{root}/named.pid";
    session-keyfile "{root}/session.key";
    listen-on port {port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
}};
controls {{ }};
{key_conf}
zone "{zone}" {{
    type primary;
    file "{root}/{zone}.zone";
    update-policy {{ {update_policy} }};
}};
"""
    )
    daemon = Daemon(
        f"named-{zone}",
        [find_tool("named"), "-g", "-4", "-c", str(root / "named.conf")],
        root / "named.log",
        cwd=root,
    )
    daemon.start()
    try:

        def answers() -> bool:
            query = dns.message.make_query(f"{zone}.", dns.rdatatype.SOA)
            return bool(dns.query.udp(query, LOOPBACK, port=port, timeout=0.5).answer)

        daemon.wait_until(answers, 30, "SOA answer")
        yield port
    finally:
        daemon.stop()
