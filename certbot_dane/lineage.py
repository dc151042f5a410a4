"""Reading a certbot lineage from disk: which version live/ shows, and its files.

Only the documented layout is used (``live/NAME/cert.pem`` is a link into
``archive/NAME/certN.pem``), so the CLI works without certbot's internals and
the plugin works the same under certbot 2.1 and 5.x.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import tlsa
from .danedir import KINDS

_VERSIONED = re.compile(r"^(?P<kind>cert|chain|fullchain|privkey)(?P<n>\d+)\.pem$")


class LineageError(Exception):
    """The lineage's files are not where certbot keeps them."""


def live_dir(config_dir: str | Path, name: str) -> Path:
    return Path(config_dir) / "live" / name


def name_from_live_path(path: str | Path) -> str:
    """``.../live/NAME/cert.pem`` -> ``NAME``."""
    return Path(path).parent.name


def live_version(config_dir: str | Path, name: str) -> tuple[int, Path]:
    """(version number, archive directory) that live/NAME/cert.pem points at."""
    link = live_dir(config_dir, name) / "cert.pem"
    if not link.exists():
        state_file = Path(config_dir) / "dane-state" / f"{name}.json"
        raise LineageError(
            f"lineage {name}: {link} does not exist; if the certificate was deleted on "
            f"purpose, remove its TLSA records and then {state_file}, otherwise check "
            "--config-dir ('certbot certificates' lists the lineages)"
        )
    target = Path(os.path.realpath(link))
    match = _VERSIONED.match(target.name)
    if not match:
        raise LineageError(f"lineage {name}: {link} points at {target}, not an archive version")
    return int(match["n"]), target.parent


def version_files(archive: Path, number: int) -> dict[str, Path]:
    return {kind: archive / f"{kind}{number}.pem" for kind in KINDS}


def version_records(
    files: dict[str, Path], targets: tuple[tlsa.Target, ...]
) -> frozenset[tlsa.Record]:
    """The TLSA records a version's certificate needs for the targets."""
    try:
        leaf = tlsa.load_pem_chain(files["cert"].read_bytes())[0]
        chain = tlsa.load_pem_chain(files["chain"].read_bytes())
    except (OSError, ValueError, IndexError) as err:
        raise LineageError(f"cannot read certificate {files['cert']}: {err}") from None
    return tlsa.records_for(targets, leaf, chain[0] if chain else None)
