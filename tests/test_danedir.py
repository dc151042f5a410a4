"""Tests for certbot_dane.danedir: staging copies, the atomic switch, pruning."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from certbot_dane import danedir
from certbot_dane.danedir import DaneDirError

LINEAGE = "mail.example.com"


def archive(tmp_path: Path, number: int, tag: str | None = None) -> dict[str, Path]:
    """certbot-style archive files for one version, each naming its kind and version."""
    base = tmp_path / "archive" / LINEAGE
    base.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind in danedir.KINDS:
        path = base / f"{kind}{number}.pem"
        path.write_text(f"{kind} of version {tag or number}\n")
        if kind == "privkey":
            path.chmod(0o600)
        files[kind] = path
    return files


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "dane"


def lineage(root: Path) -> Path:
    return root / LINEAGE


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# Stage --------------------------------------------------------------------------


def test_stage_copies(tmp_path: Path, root: Path) -> None:
    sources = archive(tmp_path, 1)
    final = danedir.stage(root, LINEAGE, 1, sources)
    assert final == lineage(root) / ".versions" / "1"
    for kind in danedir.KINDS:
        copy = final / f"{kind}.pem"
        assert not copy.is_symlink()
        assert copy.read_bytes() == sources[kind].read_bytes()
        assert not os.path.samefile(copy, sources[kind])
    assert mode(final / "privkey.pem") == 0o600
    assert mode(final / "cert.pem") & 0o022 == 0  # nobody else may write
    combined = (final / "combined.pem").read_bytes()
    assert combined == b"privkey of version 1\nfullchain of version 1\n"
    assert mode(final / "combined.pem") == 0o600
    assert sorted(os.listdir(final.parent)) == ["1"]
    assert danedir.staged(root, LINEAGE, 1)
    assert not danedir.staged(root, LINEAGE, 2)
    assert danedir.staged_files(root, LINEAGE, 1) == {
        kind: final / f"{kind}.pem" for kind in danedir.KINDS
    }


def test_stage_survives_the_archive(tmp_path: Path, root: Path) -> None:
    sources = archive(tmp_path, 1)
    final = danedir.stage(root, LINEAGE, 1, sources)
    for path in sources.values():
        path.unlink()  # certbot pruned its archive
    assert (final / "fullchain.pem").read_text() == "fullchain of version 1\n"


def test_stage_is_idempotent(tmp_path: Path, root: Path) -> None:
    first = danedir.stage(root, LINEAGE, 1, archive(tmp_path, 1))
    # a second call with different content keeps the first copy
    again = danedir.stage(root, LINEAGE, 1, archive(tmp_path, 1, tag="changed"))
    assert again == first
    assert (first / "cert.pem").read_text() == "cert of version 1\n"
    assert sorted(os.listdir(first.parent)) == ["1"]  # no leftover temp dirs


@pytest.mark.parametrize("broken", ["chain", "privkey"])
def test_stage_missing_source(tmp_path: Path, root: Path, broken: str) -> None:
    sources = archive(tmp_path, 1)
    sources[broken].unlink()
    with pytest.raises(DaneDirError, match=f"lineage {LINEAGE}: version 1 lacks {broken}"):
        danedir.stage(root, LINEAGE, 1, sources)
    assert not danedir.staged(root, LINEAGE, 1)


def test_stage_missing_kind(tmp_path: Path, root: Path) -> None:
    sources = archive(tmp_path, 1)
    del sources["cert"], sources["fullchain"]
    with pytest.raises(DaneDirError, match="lacks cert, fullchain in the archive"):
        danedir.stage(root, LINEAGE, 1, sources)
    assert not danedir.staged(root, LINEAGE, 1)


def test_stage_source_is_a_directory(tmp_path: Path, root: Path) -> None:
    sources = archive(tmp_path, 1)
    sources["chain"] = tmp_path
    with pytest.raises(DaneDirError, match="lacks chain"):
        danedir.stage(root, LINEAGE, 1, sources)


def test_lineage_dir_mode(tmp_path: Path, root: Path) -> None:
    lineage(root).mkdir(parents=True, mode=0o755)
    lineage(root).chmod(0o755)
    danedir.stage(root, LINEAGE, 1, archive(tmp_path, 1))
    assert mode(lineage(root)) == 0o700
    assert mode(lineage(root) / ".versions") == 0o700
    assert danedir.ensure(root, "other") == root / "other"
    assert mode(root / "other") == 0o700


# Switch -------------------------------------------------------------------------


def test_switch(tmp_path: Path, root: Path) -> None:
    for number in (1, 2):
        danedir.stage(root, LINEAGE, number, archive(tmp_path, number))
    assert danedir.served_version(root, LINEAGE) is None

    danedir.switch(root, LINEAGE, 1)
    path = lineage(root)
    assert os.readlink(path / "current") == ".versions/1"
    for kind in danedir.KINDS:
        assert os.readlink(path / f"{kind}.pem") == f"current/{kind}.pem"
        assert (path / f"{kind}.pem").read_text() == f"{kind} of version 1\n"
    assert danedir.served_version(root, LINEAGE) == 1

    danedir.switch(root, LINEAGE, 2)
    assert os.readlink(path / "current") == ".versions/2"
    assert (path / "fullchain.pem").read_text() == "fullchain of version 2\n"
    assert (path / "privkey.pem").read_text() == "privkey of version 2\n"
    assert danedir.served_version(root, LINEAGE) == 2
    # nothing but the links, current and the versions; no temp links left
    assert sorted(os.listdir(path)) == [
        ".versions", "cert.pem", "chain.pem", "combined.pem", "current", "fullchain.pem",
        "privkey.pem",
    ]
    assert (path / "combined.pem").read_text() == "privkey of version 2\nfullchain of version 2\n"

    danedir.switch(root, LINEAGE, 2)  # again: no change
    assert danedir.served_version(root, LINEAGE) == 2


def test_switch_repairs_a_wrong_link(tmp_path: Path, root: Path) -> None:
    danedir.stage(root, LINEAGE, 1, archive(tmp_path, 1))
    danedir.switch(root, LINEAGE, 1)
    link = lineage(root) / "chain.pem"
    link.unlink()
    link.write_text("a regular file someone put here")
    danedir.switch(root, LINEAGE, 1)
    assert os.readlink(link) == "current/chain.pem"


def test_switch_to_an_unstaged_version(tmp_path: Path, root: Path) -> None:
    danedir.stage(root, LINEAGE, 1, archive(tmp_path, 1))
    danedir.switch(root, LINEAGE, 1)
    path = lineage(root)
    before = {name: os.readlink(path / name) for name in os.listdir(path) if name != ".versions"}
    with pytest.raises(DaneDirError, match=f"lineage {LINEAGE}: version 7 is not staged"):
        danedir.switch(root, LINEAGE, 7)
    after = {name: os.readlink(path / name) for name in os.listdir(path) if name != ".versions"}
    assert after == before
    assert danedir.served_version(root, LINEAGE) == 1
    assert (path / "fullchain.pem").read_text() == "fullchain of version 1\n"


def test_switch_without_a_lineage(root: Path) -> None:
    with pytest.raises(DaneDirError, match="not staged"):
        danedir.switch(root, LINEAGE, 1)
    assert not lineage(root).exists()


def test_served_version_rejects_foreign_current(tmp_path: Path, root: Path) -> None:
    danedir.stage(root, LINEAGE, 1, archive(tmp_path, 1))
    current = lineage(root) / "current"
    current.symlink_to("/etc")
    with pytest.raises(DaneDirError, match="points at /etc, which is not a staged version"):
        danedir.served_version(root, LINEAGE)
    current.unlink()
    current.mkdir()
    with pytest.raises(DaneDirError, match="is not a symbolic link"):
        danedir.served_version(root, LINEAGE)


# Prune --------------------------------------------------------------------------


def test_prune(tmp_path: Path, root: Path) -> None:
    for number in (1, 2, 3, 4):
        danedir.stage(root, LINEAGE, number, archive(tmp_path, number))
    danedir.switch(root, LINEAGE, 2)
    leftover = lineage(root) / ".versions" / ".tmp-5-abc"
    leftover.mkdir()
    (leftover / "cert.pem").write_text("half a copy")

    removed = danedir.prune(root, LINEAGE, keep={3})
    assert removed == [1, 4]
    assert sorted(os.listdir(lineage(root) / ".versions")) == ["2", "3"]  # served one kept
    assert (lineage(root) / "fullchain.pem").read_text() == "fullchain of version 2\n"
    assert danedir.prune(root, LINEAGE, keep={3}) == []


def test_prune_without_served_version(tmp_path: Path, root: Path) -> None:
    for number in (1, 2):
        danedir.stage(root, LINEAGE, number, archive(tmp_path, number))
    assert danedir.prune(root, LINEAGE, keep=set()) == [1, 2]
    assert danedir.prune(root, "never-seen", keep=set()) == []


# Readers during switches ----------------------------------------------------------


def test_readers_never_see_a_mixed_pair(tmp_path: Path, root: Path) -> None:
    """A reader that resolves ``current`` once and opens both files under that
    target always gets a certificate and key of the same version, however the
    switches interleave: versions are immutable and ``current`` is replaced by
    one rename, so it always names one complete version.

    Opening ``NAME/fullchain.pem`` and then ``NAME/privkey.pem`` by their top
    level links is *not* covered by this guarantee: each open resolves
    ``current`` anew, and a switch between the two opens gives a mixed pair.
    Services avoid it because the reload runs only after the switch. The test
    also checks that the top level link never dangles during a switch.
    """
    for number in (1, 2):
        danedir.stage(root, LINEAGE, number, archive(tmp_path, number))
    danedir.switch(root, LINEAGE, 1)
    path = lineage(root)
    done = threading.Event()
    reads: list[tuple[str, str]] = []
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            while not done.is_set() or len(reads) < 50:
                target = os.readlink(path / "current")
                cert = (path / target / "fullchain.pem").read_text()
                key = (path / target / "privkey.pem").read_text()
                reads.append((cert, key))
                # the public name always resolves to some complete version
                assert (path / "fullchain.pem").read_text() in {
                    "fullchain of version 1\n",
                    "fullchain of version 2\n",
                }
        except BaseException as err:
            failures.append(err)

    def switcher() -> None:
        try:
            for i in range(200):
                danedir.switch(root, LINEAGE, 2 if i % 2 == 0 else 1)
        except BaseException as err:
            failures.append(err)
        finally:
            done.set()

    threads = [threading.Thread(target=reader), threading.Thread(target=switcher)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert reads
    for cert, key in reads:
        assert cert.split()[-1] == key.split()[-1], (cert, key)
    assert {cert for cert, _ in reads} <= {"fullchain of version 1\n", "fullchain of version 2\n"}
    assert danedir.served_version(root, LINEAGE) == 1  # 200 switches end on version 1
    assert ".current.tmp" not in os.listdir(path)
