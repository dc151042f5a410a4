"""``certbot-dane print``: TLSA records in zone-file format, from several sources.

An administrator needs the records before the plugin can publish them (a
zone kept by hand, a second provider, a migration) and to compare what DNS
holds with what a certificate needs. Sources, in the spirit of alnitak's
``print``: a managed lineage (its served and pending versions, as the state
remembers them), a certificate file, ``UST:FILE`` or ``UST:PORT:FILE``, and
every archive version of a certbot lineage. A file may start with the leaf
(``cert.pem``, ``fullchain.pem``) or with a CA certificate (``chain.pem``),
which is then the certificate the records hash.

A managed lineage prints its records where DNS keeps them: at the target of
an owner name that is an alias (CNAME), with a comment naming the alias; and
the records of its issuer bundle (``--dane-issuers``) as a group of their own.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from . import state, tlsa

DEFAULT_TTL = 3600
DEFAULT_SPECS = "311:25"
#: The port of a ``UST:FILE`` item: SMTP, where DANE is used most.
DEFAULT_PORT = 25

_WITH_PORT = re.compile(r"^(?P<ust>\d{3}):(?P<port>\d{1,5}):(?P<file>.+)$")
_WITHOUT_PORT = re.compile(r"^(?P<ust>\d{3}):(?P<file>.+)$")
_ARCHIVE_CERT = re.compile(r"^cert(?P<n>\d+)\.pem$")


class PrintError(Exception):
    """An item cannot be printed; the message names it and the problem."""


@dataclass(frozen=True)
class Group:
    """The records of one source, printed under one comment line.

    ``notes`` are more comment lines under the title; ``aliases`` maps a
    record's owner name to the owner names that are aliases (CNAMEs) of it.
    """

    title: str
    records: frozenset[tlsa.Record]
    notes: tuple[str, ...] = ()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _load(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PrintError(f"cannot read certificate {path}: no such file") from None
    except IsADirectoryError:
        raise PrintError(f"cannot read certificate {path}: it is a directory") from None
    except OSError as err:
        raise PrintError(f"cannot read certificate {path}: {err.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise PrintError(f"cannot read certificate {path}: no PEM certificate in it")
    try:
        return tlsa.load_pem_chain(data)
    except ValueError:
        # cryptography's message is a paragraph; the point fits in a few words.
        raise PrintError(
            f"cannot read certificate {path}: a PEM certificate in it is damaged"
        ) from None


def _sibling(path: Path, kind: str, other: str) -> Path | None:
    """certbot keeps ``cert.pem`` and ``chain.pem`` (``certN.pem``, ``chainN.pem``)
    side by side: the file of kind ``other`` next to ``path`` of kind ``kind``."""
    match = re.match(rf"^{kind}(\d*)\.pem$", path.name)
    if not match:
        return None
    sibling = path.with_name(f"{other}{match.group(1)}.pem")
    return sibling if sibling.is_file() else None


def file_records(path: Path, targets: tuple[tlsa.Target, ...]) -> frozenset[tlsa.Record]:
    """Records for a PEM file: a leaf first (cert.pem, fullchain.pem) or a CA (chain.pem).

    For a leaf, usage 3 hashes the leaf and usage 2 its issuer: the next
    certificate in the file, else the first one of the ``chain`` file next to
    a certbot ``cert`` file. A file that starts with a CA certificate is
    what an operator hands over to publish that CA: every usage hashes it.
    """
    chain = _load(path)
    if tlsa.is_ca(chain[0]):
        return _ca_records(path, chain[0], targets)
    issuer = chain[1] if len(chain) > 1 else None
    if issuer is None and any(t.usage == 2 for t in targets):
        sibling = _sibling(path, "cert", "chain")
        if sibling is not None:
            issuer = _load(sibling)[0]
    try:
        records = tlsa.records_for(targets, chain[0], issuer)
    except ValueError:
        raise PrintError(
            f"{path}: usage 2 needs the issuing certificate; give fullchain.pem "
            "(or a cert.pem with chain.pem beside it)"
        ) from None
    if not records:
        raise PrintError(f"{path}: the certificate has no DNS name to publish TLSA records for")
    return records


def _ca_records(
    path: Path, ca: x509.Certificate, targets: tuple[tlsa.Target, ...]
) -> frozenset[tlsa.Record]:
    """Records that hash a CA certificate, as ldns-dane, danetool and hash-slinger do.

    A CA names no host of its own (an intermediate's common name is "R3"):
    the owner names come from a spec's ``@HOST``, else the leaf of the
    ``cert`` file next to a certbot ``chain`` file, else the CA's own DNS
    names (a self-signed server certificate made with ``CA:TRUE``).
    """
    names = _sibling_leaf_names(path) or tlsa.host_names(ca)
    nameless = [t for t in targets if not t.owners(names)]
    if nameless:
        spec = nameless[0].spec()
        raise PrintError(
            f"{path}: its first certificate is a CA certificate, which names no host for "
            f"{spec}: name one with --tlsa {spec}@HOST and the bare file, or print the "
            "chain.pem beside the lineage's cert.pem"
        )
    return tlsa.records_for_subject(targets, ca, names)


def _sibling_leaf_names(path: Path) -> list[str]:
    """The DNS names of the leaf in ``cert.pem`` next to ``chain.pem``, if any."""
    sibling = _sibling(path, "chain", "cert")
    if sibling is None:
        return []
    leaf = _load(sibling)[0]
    return [] if tlsa.is_ca(leaf) else tlsa.cert_names(leaf)


def parse_item(text: str) -> tuple[tuple[tlsa.Target, ...] | None, Path]:
    """``UST:PORT:FILE`` or ``UST:FILE`` -> (targets, path); a bare path -> (None, path)."""
    for pattern in (_WITH_PORT, _WITHOUT_PORT):
        match = pattern.match(text)
        if match:
            port = match.groupdict().get("port") or str(DEFAULT_PORT)
            try:
                target = tlsa.parse_spec(f"{match['ust']}:{port}")
            except tlsa.SpecError as err:
                raise PrintError(str(err)) from None
            return (target,), Path(match["file"])
    return None, Path(text)


def lineage_groups(data: state.LineageFile) -> list[Group]:
    """The served and pending versions of a managed lineage and its issuer
    records, from its state, where DNS keeps them (an alias's target)."""
    s = data.rollover
    where = {owner: target for owner, target in s.aliases if owner != target}
    names: dict[str, list[str]] = {}
    for owner, target in sorted(where.items()):
        names.setdefault(target, []).append(owner)
    aliases = {target: tuple(owners) for target, owners in names.items()}
    notes = tuple(
        f"{owner} is an alias (CNAME) of {target}: its records live there"
        for owner, target in sorted(where.items())
    )
    groups = []
    for version, role in ((s.served, "served"), (s.pending, "pending")):
        if version is not None:
            title = f"{data.lineage} version {version.number} ({role})"
            groups.append(Group(title, s.place(version.records), (), aliases))
    if s.issuers:
        bundle = data.settings.issuers or "a bundle no longer configured"
        title = f"{data.lineage} issuer records (--dane-issuers {bundle})"
        groups.append(Group(title, s.place(s.issuers), (), aliases))
    if groups and notes:
        groups[0] = Group(groups[0].title, groups[0].records, notes, aliases)
    return groups


def archive_groups(
    config_dir: str | Path, name: str, targets: tuple[tlsa.Target, ...]
) -> list[Group]:
    """Every ``archive/NAME/certN.pem``, oldest first."""
    archive = Path(config_dir) / "archive" / name
    if not archive.is_dir():
        raise PrintError(
            f"no archive for lineage {name!r}: {archive} does not exist; "
            "'certbot certificates' lists the lineages"
        )
    numbers = sorted(
        int(m["n"]) for m in (_ARCHIVE_CERT.match(p.name) for p in archive.iterdir()) if m
    )
    if not numbers:
        raise PrintError(f"no certN.pem in {archive}")
    groups = []
    for number in numbers:
        path = archive / f"cert{number}.pem"
        groups.append(Group(f"{name} version {number} ({path})", file_records(path, targets)))
    return groups


def render(groups: list[Group], ttl: int) -> str:
    """Zone-file text; a record already printed for an earlier group is not repeated."""
    lines: list[str] = []
    done: set[tlsa.Record] = set()
    for group in groups:
        fresh = sorted(group.records - done)
        same = "" if fresh else " (same records as above)"
        lines.append(f"; {group.title}{same}")
        lines.extend(f"; {note}" for note in group.notes)
        lines.extend(r.zone_line(ttl) for r in fresh)
        done |= group.records
    return "\n".join(lines)


def as_json(groups: list[Group], ttl: int) -> list[dict[str, Any]]:
    return [
        {
            "source": group.title,
            "owner": r.owner,
            "ttl": ttl,
            "usage": r.usage,
            "selector": r.selector,
            "mtype": r.mtype,
            "data": r.data,
            "line": r.zone_line(ttl),
            "aliases": list(group.aliases.get(r.owner, ())),
        }
        for group in groups
        for r in sorted(group.records)
    ]
