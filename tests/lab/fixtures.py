"""Pytest fixtures that hand out a running lab.

``lab_fixture`` is session-scoped; import it into a conftest.py to share one
lab among all tests (``from tests.lab.fixtures import lab_fixture``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .lab import Lab, LabZone


def running_lab(
    run_dir: Path,
    *,
    ttl: int = 2,
    cert_validity: int | None = None,
    start_timeout: float = 30.0,
    authority: str = "bind",
    extra_zones: Sequence[str | LabZone] = (),
) -> Iterator[Lab]:
    """Yield a started Lab in ``run_dir``; stop it afterwards, test failures
    included."""
    lab = Lab(
        run_dir,
        ttl=ttl,
        cert_validity=cert_validity,
        start_timeout=start_timeout,
        authority=authority,
        extra_zones=extra_zones,
    )
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def lab_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from running_lab(tmp_path_factory.mktemp("lab"))
