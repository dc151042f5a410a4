"""Helpers for the ``certbot-dane`` command tests (tests/test_cli_*.py).

Every run gets its own ``--logs-dir`` so that tests never write to the
machine's /var/log/letsencrypt, and one-line error checks see only what the
command printed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certbot_dane import danedir, state
from certbot_dane.tlsa import load_pem_chain
from tests.deployment import Deployment, certbot_dane_path
from tests.lab.lab import Lab


def host_for(request: pytest.FixtureRequest, prefix: str = "cli") -> str:
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"{prefix}-{slug}.dane.test"


def run(
    config: Path, logs: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [certbot_dane_path(), "--config-dir", str(config), "--logs-dir", str(logs), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CliDeployment(Deployment):
    """A lab deployment whose ``certbot-dane`` runs log under the test's directory."""

    def __init__(self, lab: Lab, root: Path, host: str, margin: int = 1) -> None:
        super().__init__(lab, root, host, margin)
        self.logs = root / "dane-logs"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.config, self.logs, *args)

    def resolver(self) -> str:
        return f"127.0.0.1:{self.lab.resolver_port}"

    def snapshot(self) -> tuple[bytes, int | None, list[str]]:
        """State file bytes, served link, staged versions: to prove nothing changed."""
        path = state.state_path(self.config, self.host)
        versions = self.dane_dir() / danedir.VERSIONS
        staged = sorted(p.name for p in versions.iterdir()) if versions.is_dir() else []
        return path.read_bytes(), self.served(), staged

    def repoint(self, number: int) -> None:
        """Move the dane links by hand, as an administrator would with ln -sfn."""
        link = self.dane_dir() / danedir.CURRENT
        tmp = link.with_name(".hand")
        os.symlink(f"{danedir.VERSIONS}/{number}", tmp)
        os.replace(tmp, link)


#: The columns of the status table, in order.
COLUMNS = (
    "LINEAGE", "SERVED", "EXPIRES", "PENDING", "PUBLISHED", "VISIBLE", "HOLD LEFT",
    "LAST CHECK", "STATE", "LAST ERROR",
)


def cells(header: str, line: str) -> dict[str, str]:
    """Cut a table line at the header's column starts."""
    starts = [header.index(name) for name in COLUMNS]
    ends = [*starts[1:], None]
    return {n: line[a:b].strip() for n, a, b in zip(COLUMNS, starts, ends, strict=True)}


def spki_sha256(pem_path: Path) -> str:
    """3 1 1 data computed here, without certbot_dane.tlsa."""
    cert = load_pem_chain(pem_path.read_bytes())[0]
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {done.stderr!r}"
    assert lines[0].startswith("certbot-dane: "), lines
    return lines[0]


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """In-process main() attaches handlers to the root logger: undo that."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
