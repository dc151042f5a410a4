"""certbot's view of the plugin: options and the installer/updater hooks.

certbot calls, per lineage (see the project docs, "How it works"):

* ``prepare`` before a renewal creates anything. It stays cheap and offline,
  and never raises ``PluginError`` during ``renew``: certbot would renew
  without the installer and silently drop ``installer = dane`` for good.
* ``deploy_cert`` after ``certbot run`` / ``certbot install``: take the
  lineage under management, publish its records, pin the dane links.
* ``renew_deploy`` right after a renewal: publish the new records next to
  the old ones; the links stay on the served version.
* ``generic_updates`` on every ``certbot renew``, due or not: the deferred
  check that switches once the new records are provably live.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from certbot import errors, interfaces
from certbot.display import util as display_util
from certbot.plugins import common

from . import settings as dane_settings
from . import wakeup
from .dns import STORES
from .engine import Engine, EngineError, Result
from .lineage import LineageError, name_from_live_path
from .state import StateError

logger = logging.getLogger(__name__)


class Installer(common.Installer, interfaces.RenewDeployer, interfaces.GenericUpdater):
    """Publish TLSA records and serve a certificate only once they are live."""

    description = (
        "Publish DANE TLSA records through the lineage's DNS credentials and switch the "
        "certificate in <config-dir>/dane/NAME only when the new records are live"
    )

    @classmethod
    def add_parser_arguments(cls, add: Any) -> None:
        add(
            "tlsa",
            help="TLSA records to maintain, comma-separated UST:PORT[/PROTO][@HOST], "
            "e.g. 311:25,211:25 or 312:443/tcp@www.example.com (required)",
        )
        add("directory", help="where the links live (default: <config-dir>/dane)")
        add(
            "dns",
            help=f"record store: {', '.join(STORES)} (default: follows the DNS authenticator)",
        )
        add(
            "credentials",
            help="credentials file of the record store (default: the DNS authenticator's)",
        )
        add(
            "resolver",
            help="DNSSEC-validating resolver ADDR[:PORT] that decides visibility "
            "(default: the system's first nameserver)",
        )
        add(
            "nameservers",
            help="authoritative servers to check, ADDR[:PORT],... (default: the zone's NS)",
        )
        add("reload", help="command run (no shell) after the served certificate changes")
        add(
            "record-ttl",
            type=int,
            help="TTL of published records (default: the existing RRset's, else 3600)",
        )
        add(
            "hold-margin",
            type=int,
            help=f"seconds added to the hold (default: {dane_settings.DEFAULT_HOLD_MARGIN})",
        )
        add(
            "exec",
            help="exec store: program and arguments (no shell) run once per record, "
            "with the alnitak environment contract",
        )
        add("exec-timeout", type=int, help="exec store: seconds before the program is killed")
        add(
            "api-url",
            help="record store API base URL (Cloudflare, Google, PowerDNS, deSEC, OVH, "
            "Route 53 endpoint)",
        )
        add(
            "endpoints",
            help="where the services listen, HOST:PORT[/STARTTLS],... (STARTTLS: smtp, imap, "
            "pop3, xmpp): old records are retired only once every one presents a "
            "certificate the remaining records match",
        )
        add(
            "endpoint-timeout",
            type=int,
            help="seconds an endpoint may stay behind before the check fails "
            f"(default: {dane_settings.DEFAULT_ENDPOINT_TIMEOUT})",
        )
        add(
            "audit-interval",
            type=int,
            help="seconds between audits of the records in DNS by 'certbot-dane check', "
            f"which re-publishes missing ones (default: {dane_settings.DEFAULT_AUDIT_INTERVAL}; "
            "0: never)",
        )
        add(
            "issuers",
            help="PEM bundle of the CA's intermediate certificates whose usage 2 records "
            "stay published ahead of renewals",
        )
        add(
            "group",
            help="group that may read the key files in the dane directory (default: none)",
        )
        add(
            "google-project",
            help="google store: the Google Cloud project that holds the zones (default: "
            "--dns-google-project, else the credentials' project)",
        )
        add("lock-timeout", type=int, help=argparse.SUPPRESS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deployed: set[str] = set()

    # certbot's Installer interface ---------------------------------------

    def prepare(self) -> None:
        """Check the options offline; during renew, only log what is wrong.

        There is nothing to freeze: the dane links point at the plugin's own
        copy of the served version, which no renewal or pruning can move.
        """
        if getattr(self.config, "verb", None) == "renew":
            return
        if self.conf("tlsa") is None and getattr(self.config, "verb", None) != "install":
            return
        try:
            dane_settings.from_options(self._options(), self.config, self._certname())
        except dane_settings.SettingsError as err:
            raise errors.MisconfigurationError(f"dane: {err}") from None

    def more_info(self) -> str:
        return (
            "Keeps services on a certificate whose TLSA records are live: new records "
            "are published next to the old ones at renewal, and the links in the dane "
            "directory move only after every cache can see them."
        )

    def get_all_names(self) -> list[str]:
        return []

    def deploy_cert(
        self,
        domain: str,
        cert_path: str,
        key_path: str,
        chain_path: str | None = None,
        fullchain_path: str | None = None,
    ) -> None:
        name = name_from_live_path(cert_path)
        if name in self._deployed:
            return
        self._deployed.add(name)
        settings = self._settings(name)
        result = self._engine().install(name, settings)
        self._report(result, settings)
        if result.error:
            raise errors.PluginError(f"dane: lineage {name}: {result.error}")
        self._arm(result)
        if getattr(self.config, "verb", None) == "install":
            self._advise_renewal_conf(name)

    def enhance(self, domain: str, enhancement: str, options: Any = None) -> None:
        raise errors.PluginError(f"dane: enhancement {enhancement!r} is not supported")

    def supported_enhancements(self) -> list[str]:
        return []

    def save(self, title: str | None = None, temporary: bool = False) -> None:
        """Nothing to save: every step already persisted its state."""

    def config_test(self) -> None:
        """Nothing to test: there is no server configuration."""

    def restart(self) -> None:
        """The reload command runs when the served certificate changes, not here."""

    # Updaters --------------------------------------------------------------

    def renew_deploy(self, lineage: Any, *args: Any, **kwargs: Any) -> None:
        self._update(lineage.lineagename)

    def generic_updates(self, lineage: Any, *args: Any, **kwargs: Any) -> None:
        self._update(lineage.lineagename)

    def _update(self, name: str) -> None:
        engine = self._engine()
        try:
            if self.conf("tlsa") is not None:
                result = engine.install(name, self._settings(name))
            else:
                result = engine.check(name)
        except (EngineError, StateError, LineageError) as err:
            raise errors.PluginError(f"dane: {err}") from None
        if result.error:
            raise errors.PluginError(f"dane: lineage {name}: {result.error}")
        for step in result.steps:
            logger.info("dane: lineage %s: %s", name, step)
        self._arm(result)

    def _arm(self, result: Result) -> None:
        """A hold that ends before the timer's next run would otherwise wait for it:
        ask for a check at its end (see :mod:`.wakeup`)."""
        if result.waiting_for == "hold" and result.until is not None:
            wakeup.arm(
                result.lineage,
                result.until,
                time.time(),
                self.config.config_dir,
                self.config.logs_dir,
            )

    # Helpers ---------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        keys = ("tlsa", "directory", "dns", "credentials", "resolver", "nameservers", "reload")
        options = {key: self.conf(key) for key in keys}
        options["record_ttl"] = self.conf("record-ttl")
        options["hold_margin"] = self.conf("hold-margin")
        options["exec"] = self.conf("exec")
        options["exec_timeout"] = self.conf("exec-timeout")
        options["api_url"] = self.conf("api-url")
        options["endpoints"] = self.conf("endpoints")
        options["endpoint_timeout"] = self.conf("endpoint-timeout")
        options["audit_interval"] = self.conf("audit-interval")
        options["issuers"] = self.conf("issuers")
        options["group"] = self.conf("group")
        options["google_project"] = self.conf("google-project")
        return options

    def _certname(self) -> str | None:
        return getattr(self.config, "certname", None)

    def _settings(self, name: str) -> Any:
        try:
            return dane_settings.from_options(self._options(), self.config, name)
        except dane_settings.SettingsError as err:
            raise errors.PluginError(f"dane: {err}") from None

    def _engine(self) -> Engine:
        timeout = self.conf("lock-timeout")
        return Engine(self.config.config_dir, lock_timeout=float(timeout or 300))

    def _report(self, result: Result, settings: Any) -> None:
        name = result.lineage
        for step in result.steps:
            logger.info("dane: lineage %s: %s", name, step)
        if result.error:
            return
        links = Path(settings.directory) / name
        if result.served is None:
            display_util.notify(_first_version_waits(name, links, result))
            return
        message = (
            f"dane: {name}: services should read {links}/combined.pem (key and full chain), "
            "or fullchain.pem and privkey.pem there"
        )
        if result.waiting:
            message += f"; waiting: {result.waiting}"
        display_util.notify(message)

    def _advise_renewal_conf(self, name: str) -> None:
        """``certbot install`` records neither the installer nor the options in the
        renewal configuration: say so, and the one command that does."""
        conf = dane_settings.renewal_params(self.config.config_dir, name)
        command = self._recording_command(name)
        if conf.get("installer") != "dane":
            display_util.notify(
                f"dane: 'certbot install' does not make renewals call this plugin for {name}. "
                f"Run once: {command}\n"
                "Until then 'certbot-dane check' (its timer) keeps the records and links in "
                "step."
            )
            return
        differing = [
            f"--dane-{key.replace('_', '-')}"
            for key, value in self._options().items()
            if value is not None and str(value) != str(conf.get(f"dane_{key}", ""))
        ]
        if differing:
            display_util.notify(
                f"dane: 'certbot install' does not store options: the next 'certbot renew' "
                f"of {name} goes back to the renewal configuration's {', '.join(differing)}. "
                f"To keep them, run once: {command}"
            )

    def _recording_command(self, name: str) -> str:
        """The command that stores ``installer = dane`` and the given options."""
        import certbot

        args = dane_settings.cli_args(self._options())
        major_minor = tuple(int(p) for p in certbot.__version__.split(".")[:2])
        if major_minor >= (2, 3):
            command = f"certbot reconfigure --cert-name {name} -i dane {args}"
        else:
            command = (
                f"certbot renew --cert-name {name} --force-renewal "
                f"--no-random-sleep-on-renew -i dane {args}"
            )
        return command.strip()


def _first_version_waits(name: str, links: Path, result: Result) -> str:
    """The one line for a first version that must wait before its links exist."""
    when = ""
    if result.until is not None:
        left = max(0, int(result.until - time.time()))
        at = time.strftime("%H:%M:%S UTC", time.gmtime(result.until))
        when = f" in about {left} s (at {at})"
    return (
        f"dane: {name}: the TLSA owner names already hold records this certificate does not "
        f"match, which clients may have cached, so the links in {links} appear only once its "
        f"records are live{when} (now: {result.waiting or 'waiting'}); "
        f"'certbot-dane check --wait --cert-name {name}' waits for it"
    )
