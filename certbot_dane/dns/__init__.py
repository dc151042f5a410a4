"""Record stores, and how a lineage's store is chosen.

Each store is one module here with one class. This table is the only place
that knows them all: which ``--dane-dns`` name selects a store, which certbot
authenticator it follows by default, where that authenticator keeps its
credentials (and, for Google, its project) in the renewal conf, and which
package it needs. Modules are
imported only when used, so a missing optional SDK never breaks certbot.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import RecordStore, RRsetView, SoftStoreError, StoreConfigError, StoreError

if TYPE_CHECKING:
    from ..state import Settings


@dataclass(frozen=True)
class StoreSpec:
    module: str
    cls: str
    authenticator: str | None = None
    credentials_key: str | None = None
    package: str | None = None
    #: the renewal-conf key of the authenticator's cloud project option, if it has one
    project_key: str | None = None


STORE_SPECS: dict[str, StoreSpec] = {
    "rfc2136": StoreSpec("rfc2136", "Rfc2136Store", "dns-rfc2136", "dns_rfc2136_credentials"),
    "route53": StoreSpec("route53", "Route53Store", "dns-route53", None, "boto3"),
    "cloudflare": StoreSpec(
        "cloudflare", "CloudflareStore", "dns-cloudflare", "dns_cloudflare_credentials"
    ),
    "powerdns": StoreSpec(
        "powerdns", "PowerDnsStore", "dns-powerdns", "dns_powerdns_credentials"
    ),
    "desec": StoreSpec("desec", "DesecStore", "dns-desec", "dns_desec_credentials"),
    "ovh": StoreSpec("ovh", "OvhStore", "dns-ovh", "dns_ovh_credentials", "ovh"),
    "google": StoreSpec(
        "google",
        "GoogleStore",
        "dns-google",
        "dns_google_credentials",
        "google-auth",
        "dns_google_project",
    ),
    "exec": StoreSpec("exec", "ExecStore"),
}
STORES = tuple(STORE_SPECS)


def store_for_authenticator(authenticator: str | None) -> str | None:
    for name, spec in STORE_SPECS.items():
        if spec.authenticator and spec.authenticator == authenticator:
            return name
    return None


def credentials_key(store: str) -> str | None:
    """The renewal-conf key under which the matching certbot plugin keeps its INI."""
    spec = STORE_SPECS.get(store)
    return spec.credentials_key if spec else None


def project_key(store: str) -> str | None:
    """The renewal-conf key under which the matching certbot plugin keeps its project."""
    spec = STORE_SPECS.get(store)
    return spec.project_key if spec else None


def store_class(store: str) -> type[RecordStore]:
    spec = STORE_SPECS.get(store)
    if spec is None:
        raise StoreConfigError(
            f"unknown DNS store {store!r}: use --dane-dns with one of {', '.join(STORES)}"
        )
    try:
        module = importlib.import_module(f"{__name__}.{spec.module}")
    except ModuleNotFoundError as err:
        package = spec.package or err.name
        raise StoreConfigError(
            f"{store} store: the Python package {package!r} is not installed; install it "
            f"into certbot's environment (pip install {package})"
        ) from None
    cls: type[RecordStore] = getattr(module, spec.cls)
    return cls


def open_store(settings: Settings, config_dir: str, timeout: float = 10.0) -> RecordStore:
    """Build the lineage's store; every problem is a :class:`StoreConfigError`.

    Opening a store is offline: it reads credentials, it does not connect.
    ``config_dir`` is certbot's configuration directory.
    """
    return store_class(settings.store).from_settings(settings, str(config_dir), timeout=timeout)


__all__ = [
    "STORES",
    "STORE_SPECS",
    "RRsetView",
    "RecordStore",
    "SoftStoreError",
    "StoreConfigError",
    "StoreError",
    "StoreSpec",
    "credentials_key",
    "open_store",
    "project_key",
    "store_class",
    "store_for_authenticator",
]
