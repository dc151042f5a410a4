"""Turning command-line options into checked :class:`~.state.Settings`.

Everything here is offline: it reads the options, the renewal conf and the
credentials file, and fails with one line that names the problem and the fix.
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from . import danedir, endpoints, issuers, tlsa
from . import dns as stores
from .observe import parse_address
from .state import Settings

DEFAULT_HOLD_MARGIN = 60
DEFAULT_EXEC_TIMEOUT = 60
DEFAULT_ENDPOINT_TIMEOUT = 3600
DEFAULT_AUDIT_INTERVAL = 900
MAX_TTL = 2**31 - 1
#: A Google Cloud project id (6 to 30 of a-z, 0-9 and -, from a letter), with
#: the domain prefix that old projects of Google Workspace domains carry.
_PROJECT_ID = re.compile(r"(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


class SettingsError(ValueError):
    """An option is wrong; the message names it and says how to fix it."""


def renewal_params(config_dir: str | Path, name: str | None) -> dict[str, Any]:
    """The ``[renewalparams]`` of ``renewal/NAME.conf``, or {} when there is none."""
    if not name:
        return {}
    path = Path(config_dir) / "renewal" / f"{name}.conf"
    if not path.is_file():
        return {}
    import configobj

    try:
        return dict(configobj.ConfigObj(str(path), encoding="utf-8").get("renewalparams", {}))
    except configobj.ConfigObjError:
        return {}


def from_options(options: dict[str, Any], config: Any, name: str | None) -> Settings:
    params = renewal_params(config.config_dir, name)
    try:
        targets = tlsa.parse_specs(options.get("tlsa") or "")
    except tlsa.SpecError as err:
        raise SettingsError(f"--dane-tlsa: {err}") from None
    store = _store(options, config, params)
    credentials = _credentials(options, config, params, store)
    directory = Path(options.get("directory") or Path(config.config_dir) / "dane").absolute()
    settings = Settings(
        targets=tlsa.format_specs(targets),
        directory=str(directory),
        store=store,
        credentials=credentials,
        resolver=_address(options.get("resolver"), "--dane-resolver"),
        nameservers=_addresses(options.get("nameservers")),
        reload=_reload(options.get("reload")),
        record_ttl=_number(options.get("record_ttl"), "--dane-record-ttl", 1, MAX_TTL),
        hold_margin=_number(options.get("hold_margin"), "--dane-hold-margin", 0, MAX_TTL)
        if options.get("hold_margin") is not None
        else DEFAULT_HOLD_MARGIN,
        exec_command=_exec(options.get("exec"), store),
        exec_timeout=_number(options.get("exec_timeout"), "--dane-exec-timeout", 1, 86400)
        or DEFAULT_EXEC_TIMEOUT,
        api_url=_url(options.get("api_url")),
        endpoints=_endpoints(options.get("endpoints")),
        endpoint_timeout=_default(
            _number(options.get("endpoint_timeout"), "--dane-endpoint-timeout", 1, MAX_TTL),
            DEFAULT_ENDPOINT_TIMEOUT,
        ),
        audit_interval=_default(
            _number(options.get("audit_interval"), "--dane-audit-interval", 0, MAX_TTL),
            DEFAULT_AUDIT_INTERVAL,
        ),
        issuers=_issuers(options.get("issuers"), targets),
        group=_group(options.get("group")),
        project=_project(options, config, params, store),
    )
    try:
        stores.open_store(settings, config.config_dir)
    except stores.StoreConfigError as err:
        raise SettingsError(str(err)) from None
    return settings


def _store(options: dict[str, Any], config: Any, params: dict[str, Any]) -> str:
    explicit = options.get("dns")
    if explicit:
        if explicit not in stores.STORES:
            raise SettingsError(
                f"--dane-dns {explicit!r} is not a known store; use one of "
                f"{', '.join(stores.STORES)}"
            )
        return explicit
    authenticator = getattr(config, "authenticator", None) or params.get("authenticator")
    store = stores.store_for_authenticator(authenticator)
    if store is None:
        raise SettingsError(
            f"cannot tell where to publish TLSA records (authenticator {authenticator!r} has "
            "no matching store); pass --dane-dns rfc2136 --dane-credentials PATH"
        )
    return store


def _credentials(
    options: dict[str, Any], config: Any, params: dict[str, Any], store: str
) -> str | None:
    path = options.get("credentials")
    key = stores.credentials_key(store)
    if not path and key:
        path = getattr(config, key, None) or params.get(key)
    if not path:
        return None
    if not isinstance(path, str):
        path = str(path)
    resolved = Path(path).expanduser().absolute()
    if not resolved.is_file():
        raise SettingsError(
            f"credentials file {resolved} does not exist; pass --dane-credentials with the "
            "path of the INI your DNS plugin uses"
        )
    return str(resolved)


def _project(
    options: dict[str, Any], config: Any, params: dict[str, Any], store: str
) -> str | None:
    """The cloud project: ``--dane-google-project``, else the authenticator's
    (``--dns-google-project``, kept as ``dns_google_project``)."""
    value, source = options.get("google_project"), "--dane-google-project"
    key = stores.project_key(store)
    if value and not key:
        raise SettingsError(
            f"--dane-google-project applies to --dane-dns google only, not to {store}; "
            "remove it"
        )
    if not value and key:
        value = getattr(config, key, None) or params.get(key)
        source = f"{key} of the renewal configuration (--dns-google-project)"
    if not value:
        return None
    text = str(value).strip()
    if not _PROJECT_ID.fullmatch(text):
        raise SettingsError(
            f"{source}: {text!r} is not a Google Cloud project id (6 to 30 lower-case "
            "letters, digits and hyphens, as shown by 'gcloud projects list')"
        )
    return text


def _address(value: Any, option: str) -> str | None:
    if not value:
        return None
    try:
        parse_address(str(value))
    except ValueError as err:
        raise SettingsError(f"{option}: {err}") from None
    return str(value)


def _addresses(value: Any) -> str | None:
    if not value:
        return None
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    for part in parts:
        _address(part, "--dane-nameservers")
    return ",".join(parts)


def _reload(value: Any) -> str | None:
    if not value:
        return None
    try:
        argv = shlex.split(str(value))
    except ValueError as err:
        raise SettingsError(f"--dane-reload: cannot split {value!r}: {err}") from None
    if not argv:
        return None
    if shutil.which(argv[0]) is None:
        raise SettingsError(
            f"--dane-reload: program {argv[0]!r} not found or not executable; give its full path"
        )
    return str(value)


def _exec(value: Any, store: str) -> str | None:
    if not value:
        if store == "exec":
            raise SettingsError(
                "--dane-dns exec needs --dane-exec \"PROGRAM ARGS\": the program that "
                "publishes and deletes records"
            )
        return None
    try:
        argv = shlex.split(str(value))
    except ValueError as err:
        raise SettingsError(f"--dane-exec: cannot split {value!r}: {err}") from None
    if not argv or shutil.which(argv[0]) is None:
        raise SettingsError(
            f"--dane-exec: program {argv[0] if argv else value!r} not found or not "
            "executable; give its full path"
        )
    return str(value)


def _url(value: Any) -> str | None:
    if not value:
        return None
    text = str(value).rstrip("/")
    if not text.startswith(("https://", "http://")):
        raise SettingsError(f"--dane-api-url: {value!r} is not an http(s) URL")
    return text


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _endpoints(value: Any) -> str | None:
    if not value:
        return None
    try:
        parsed = endpoints.parse_endpoints(str(value))
    except ValueError as err:
        raise SettingsError(f"--dane-endpoints: {err}") from None
    return endpoints.format_endpoints(parsed) or None


def _issuers(value: Any, targets: tuple[tlsa.Target, ...]) -> str | None:
    if not value:
        return None
    if not any(t.usage == 2 for t in targets):
        raise SettingsError(
            "--dane-issuers needs a usage 2 spec in --dane-tlsa (e.g. 311:25,211:25): the "
            "bundle's records are 2 x x records"
        )
    path = Path(str(value)).expanduser().absolute()
    try:
        issuers.read_bundle(path)
    except issuers.IssuerError as err:
        raise SettingsError(str(err)) from None
    return str(path)


def _group(value: Any) -> str | None:
    if not value:
        return None
    try:
        danedir.group_id(str(value))
    except danedir.DaneDirError as err:
        raise SettingsError(str(err)) from None
    return str(value)


def _number(value: Any, option: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{option}: {value!r} is not a whole number of seconds") from None
    if not low <= number <= high:
        raise SettingsError(f"{option}: {number} is out of range ({low} to {high})")
    return number


def cli_args(options: dict[str, Any]) -> str:
    """The ``--dane-*`` arguments that reproduce the given options."""
    parts = []
    for key, value in options.items():
        if value is None:
            continue
        parts.append(f"--dane-{key.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)
