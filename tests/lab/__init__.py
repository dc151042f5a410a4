"""Loopback test lab: signed zone (BIND 9), validating resolver (Unbound),
ACME CA (Pebble), a TLS service that re-reads its certificate per connection,
and a DANE probe."""

from .lab import Lab, find_tool
from .probe import Prober, ProbeResult, Sample, dane_check
from .process import LabError
from .service import DaneService

__all__ = [
    "DaneService",
    "Lab",
    "LabError",
    "ProbeResult",
    "Prober",
    "Sample",
    "dane_check",
    "find_tool",
]
