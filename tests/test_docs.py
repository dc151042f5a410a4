"""The documentation builds without a warning (broken references, bad markup)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sphinx_builds_without_warnings(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "sphinx", "-q", "-W", "-b", "html"]
    done = subprocess.run(
        [*argv, str(ROOT / "docs"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "how-it-works.html").is_file()


#: A reload command in an example: after --dane-reload (man page dashes
#: included) or dane_reload =, quoted or not.
RELOAD_EXAMPLE = re.compile(
    r"""(?:\\?-\\?-dane\\?-reload[ =]+|dane_reload\s*=\s*)["']?(?P<program>[^"'\s`]+)"""
)


def reload_programs() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", ROOT / "packaging" / "man" / "certbot-dane.8"]
    pages += sorted((ROOT / "docs").rglob("*.rst"))
    return [
        (str(page.relative_to(ROOT)), match["program"])
        for page in pages
        for match in RELOAD_EXAMPLE.finditer(page.read_text(encoding="utf-8"))
    ]


def test_reload_examples_give_a_full_path() -> None:
    """cron and systemd run the reload command with a short PATH (docs/options.rst)."""
    programs = reload_programs()
    assert len(programs) >= 8, programs  # README, man page, quickstart, options at least
    pages = {page for page, _ in programs}
    assert {"README.md", "packaging/man/certbot-dane.8", "docs/options.rst"} <= pages
    # COMMAND is the placeholder of the option's own description.
    relative = [(page, p) for page, p in programs if not p.startswith("/") and p != "COMMAND"]
    assert not relative
