"""Record stores and how a lineage's store is chosen."""
from __future__ import annotations

from .base import RecordStore, RRsetView, StoreConfigError, StoreError

#: ``--dane-dns`` names, and the certbot authenticators they follow by default.
AUTHENTICATOR_STORES = {"dns-rfc2136": "rfc2136"}
STORES = ("rfc2136",)


def store_for_authenticator(authenticator: str | None) -> str | None:
    return AUTHENTICATOR_STORES.get(authenticator or "")


def credentials_key(store: str) -> str | None:
    """The renewal-conf key under which the matching certbot plugin keeps its INI."""
    return {"rfc2136": "dns_rfc2136_credentials"}.get(store)


def open_store(store: str, credentials: str | None, timeout: float = 10.0) -> RecordStore:
    """Build the named store; every problem is a :class:`StoreConfigError`."""
    if store == "rfc2136":
        from .rfc2136 import Rfc2136Store

        return Rfc2136Store.from_credentials(credentials, timeout=timeout)
    raise StoreConfigError(
        f"unknown DNS store {store!r}: use --dane-dns with one of {', '.join(STORES)}"
    )


__all__ = [
    "RRsetView",
    "RecordStore",
    "StoreConfigError",
    "StoreError",
    "credentials_key",
    "open_store",
    "store_for_authenticator",
]
