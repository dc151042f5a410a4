"""The dane directory: the links services read instead of live/.

Layout for one lineage::

    <dane-dir>/NAME/                     0700 (0750 with a group)
        .versions/7/{cert,chain,fullchain,privkey}.pem   copies of archive version 7
        current -> .versions/7
        fullchain.pem -> current/fullchain.pem  (and cert, chain, privkey, combined)

With ``--dane-group GROUP`` the lineage's directories are 0750 and its key
files (``privkey.pem``, ``combined.pem``) 0640, group GROUP: for services that
read their key after dropping privileges (Exim as Debian-exim, Prosody).
Without it, only the owner (root) can read them.

Moving the served version is one ``rename`` of ``current``. A service that
opens ``fullchain.pem`` and ``privkey.pem`` one after the other could straddle
that rename; ``combined.pem`` (the key followed by the full chain, one file)
cannot, so it is the safest choice where the service accepts it (Postfix
``smtpd_tls_chain_files``, HAProxy, nginx with both directives on it). The
version files are copies made when the version is first seen, so certbot
pruning its archive can never leave a link dangling.
"""
from __future__ import annotations

import contextlib
import grp
import os
import shutil
import tempfile
from pathlib import Path

from . import durable
from .state import fsync_dir

KINDS = ("cert", "chain", "fullchain", "privkey")
COMBINED = "combined"
LINKS = (*KINDS, COMBINED)
VERSIONS = ".versions"
CURRENT = "current"


class DaneDirError(Exception):
    """The dane directory cannot be set up or changed."""


def lineage_dir(directory: str | Path, lineage: str) -> Path:
    return Path(directory) / lineage


SECRETS = ("privkey.pem", f"{COMBINED}.pem")


def group_id(group: str | None) -> int | None:
    """The id of ``group`` (None: no group); DaneDirError if there is no such group."""
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise DaneDirError(
            f"--dane-group {group}: no such group; create it or name an existing one"
        ) from None


def _permit(path: Path, gid: int | None, secret: bool = False) -> None:
    """Mode and group of one entry: readable by ``gid`` where it is given."""
    if path.is_dir():
        mode = 0o750 if gid is not None else 0o700
    else:
        mode = (0o640 if gid is not None else 0o600) if secret else 0o644
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)


def ensure(directory: str | Path, lineage: str, group: str | None = None) -> Path:
    """Create the lineage's directory (0700, or 0750 with a group)."""
    root = Path(directory)
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    gid = group_id(group)
    path = lineage_dir(root, lineage)
    path.mkdir(mode=0o700, exist_ok=True)
    _permit(path, gid)
    (path / VERSIONS).mkdir(mode=0o700, exist_ok=True)
    _permit(path / VERSIONS, gid)
    return path


def permit(directory: str | Path, lineage: str, group: str | None) -> None:
    """Apply ``group`` (or its absence) to everything the lineage's directory holds.

    For a group given or removed after the versions were staged.
    """
    gid = group_id(group)
    path = lineage_dir(directory, lineage)
    if not path.is_dir():
        return
    _permit(path, gid)
    for entry in sorted(path.rglob("*")):
        if entry.is_symlink() or entry.name.startswith(".tmp-"):
            continue
        # Public files (certificates) are world-readable anyway.
        if entry.is_dir() or entry.name in SECRETS:
            _permit(entry, gid, secret=entry.name in SECRETS)


def stage(directory: str | Path, lineage: str, number: int, sources: dict[str, Path]) -> Path:
    """Copy one archive version into the dane directory; idempotent.

    The copy is built in a temporary directory and renamed into place, so a
    version directory either exists complete or not at all.
    """
    error = stage_many([(directory, lineage, number, sources)])[0]
    if error is not None:
        raise error
    return lineage_dir(directory, lineage) / VERSIONS / str(number)


Staging = tuple[str | Path, str, int, dict[str, Path]]


def stage_many(
    items: list[Staging], groups: list[str | None] | None = None
) -> list[Exception | None]:
    """:func:`stage` for many (directory, lineage, number, sources) at once.

    Every copy is written first, then all are made durable together
    (:func:`durable.flush`), then each is renamed into place and the renames
    are made durable. The result holds the error of each item that failed
    (None where it was staged).
    """
    results: list[Exception | None] = [None] * len(items)
    built: list[tuple[int, Path, Path]] = []
    groups = groups or [None] * len(items)
    try:
        for index, (directory, lineage, number, sources) in enumerate(items):
            try:
                tmp = _build(directory, lineage, number, sources, groups[index])
            except (DaneDirError, OSError) as err:
                results[index] = err
                continue
            if tmp is not None:
                built.append((index, tmp, tmp.parent / str(number)))
        durable.flush([f for _, tmp, _ in built for f in tmp.iterdir()] + [t for _, t, _ in built])
        for index, tmp, final in built:
            try:
                os.rename(tmp, final)
            except OSError as err:
                results[index] = err
        durable.flush({final.parent for _, _, final in built})
    finally:
        for _, tmp, _ in built:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def _build(
    directory: str | Path,
    lineage: str,
    number: int,
    sources: dict[str, Path],
    group: str | None = None,
) -> Path | None:
    """The version's copy in a temporary directory (None: already staged)."""
    missing = [k for k in KINDS if k not in sources or not Path(sources[k]).is_file()]
    if missing:
        raise DaneDirError(
            f"lineage {lineage}: version {number} lacks {', '.join(missing)} in the archive"
        )
    versions = ensure(directory, lineage, group) / VERSIONS
    if (versions / str(number)).is_dir():
        return None
    gid = group_id(group)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{number}-", dir=versions))
    try:
        for kind in KINDS:
            _write(tmp / f"{kind}.pem", Path(sources[kind]).read_bytes(), gid)
        key, chain = (Path(sources[k]).read_bytes() for k in ("privkey", "fullchain"))
        _write(tmp / f"{COMBINED}.pem", key.rstrip(b"\n") + b"\n" + chain, gid)
        _permit(tmp, gid)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _write(target: Path, data: bytes, gid: int | None = None) -> None:
    secret = target.name in SECRETS
    mode = 0o600 if secret else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    if secret and gid is not None:
        # Group and mode before the key is written: never readable more widely.
        os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o640)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def staged_files(directory: str | Path, lineage: str, number: int) -> dict[str, Path]:
    base = lineage_dir(directory, lineage) / VERSIONS / str(number)
    return {kind: base / f"{kind}.pem" for kind in KINDS}


def staged(directory: str | Path, lineage: str, number: int) -> bool:
    return (lineage_dir(directory, lineage) / VERSIONS / str(number)).is_dir()


def served_version(directory: str | Path, lineage: str) -> int | None:
    """The version ``current`` points at, or None when there is no link yet."""
    link = lineage_dir(directory, lineage) / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DaneDirError(f"{link} is not a symbolic link ({err.strerror})") from None
    name = Path(target).name
    if Path(target).parent.name != VERSIONS or not name.isdigit():
        raise DaneDirError(f"{link} points at {target}, which is not a staged version")
    return int(name)


def switch(directory: str | Path, lineage: str, number: int, sync: bool = True) -> Path:
    """Point the lineage's links at a staged version, atomically.

    Returns the lineage's directory; with ``sync`` False the caller makes its
    entries durable (see :func:`durable.flush`).
    """
    path = lineage_dir(directory, lineage)
    if not staged(directory, lineage, number):
        raise DaneDirError(f"lineage {lineage}: version {number} is not staged in {path}")
    tmp = path / f".{CURRENT}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(f"{VERSIONS}/{number}", tmp)
    os.replace(tmp, path / CURRENT)
    for kind in LINKS:
        _ensure_link(path / f"{kind}.pem", f"{CURRENT}/{kind}.pem")
    if sync:
        fsync_dir(path)
    return path


def _ensure_link(link: Path, target: str) -> None:
    try:
        if os.readlink(link) == target:
            return
    except FileNotFoundError:
        pass
    except OSError:
        pass
    tmp = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def prune(directory: str | Path, lineage: str, keep: set[int]) -> list[int]:
    """Remove staged versions that are neither served nor pending."""
    versions = lineage_dir(directory, lineage) / VERSIONS
    removed: list[int] = []
    if not versions.is_dir():
        return removed
    current = served_version(directory, lineage)
    if current is not None:
        keep = keep | {current}
    for entry in versions.iterdir():
        if entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.isdigit() and int(entry.name) not in keep:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(int(entry.name))
    return sorted(removed)
