"""RFC 2136 dynamic updates with TSIG, reading certbot-dns-rfc2136's INI.

The zone is found by asking the primary server itself (the SOA in its
answer or authority section names the zone apex), never by guessing from
the name's last labels. Each update adds or deletes single records, so
other records at the same owner name are left alone.

Why single-record updates are safe for hosts that share an owner name
(several MX hosts publishing at ``_25._tcp.mx.example.com``): in RFC 2136
(section 2.5.1) an add merges one RR into the RRset and a duplicate is
ignored; a delete of class NONE (section 2.5.4) removes exactly the one RR
whose rdata matches. The primary applies each update atomically and one at
a time, so two hosts updating the same name concurrently can never lose
each other's records. That is also why updates carry no prerequisites: the
zone section already names the zone (a server not authoritative for it
answers NOTAUTH or NOTZONE), and a value-dependent "RRset exists"
prerequisite would make an update fail whenever another host had just
changed the RRset, without protecting anything. A whole-RRset replace, the
usual shortcut, would delete the other hosts' records.

Everything certbot-dns-rfc2136 accepts is accepted here: the six HMAC TSIG
algorithms in any letter case, and ``dns_rfc2136_sign_query`` to sign the
SOA and TLSA queries for servers that answer signed queries only.
"""
from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from ..tlsa import Record
from .base import RecordStore, RRsetView, StoreConfigError, StoreError, by_owner

if TYPE_CHECKING:
    from ..state import Settings

ALGORITHMS = {
    "HMAC-MD5": dns.tsig.HMAC_MD5,
    "HMAC-SHA1": dns.tsig.HMAC_SHA1,
    "HMAC-SHA224": dns.tsig.HMAC_SHA224,
    "HMAC-SHA256": dns.tsig.HMAC_SHA256,
    "HMAC-SHA384": dns.tsig.HMAC_SHA384,
    "HMAC-SHA512": dns.tsig.HMAC_SHA512,
}


class Rfc2136Store(RecordStore):
    name = "rfc2136"

    def __init__(
        self,
        server: str,
        port: int,
        key_name: str,
        secret: str,
        algorithm: str = "HMAC-MD5",
        timeout: float = 10.0,
        sign_query: bool = False,
    ) -> None:
        self.server = server
        self.port = port
        self.timeout = timeout
        self.sign_query = sign_query
        alg = ALGORITHMS.get(algorithm.strip().upper())
        if alg is None:
            raise StoreConfigError(
                f"rfc2136 store: unknown TSIG algorithm {algorithm!r}; use one of "
                f"{', '.join(ALGORITHMS)}"
            )
        try:
            self._key_name = dns.name.from_text(key_name)
            self._keyring = dns.tsigkeyring.from_text({key_name: secret})
        except (dns.exception.DNSException, ValueError, TypeError):
            raise StoreConfigError(
                "rfc2136 store: the TSIG key name or secret in the credentials file is "
                "malformed; check dns_rfc2136_name and dns_rfc2136_secret"
            ) from None
        self._algorithm = alg
        self._zones: dict[str, dns.name.Name] = {}

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> Rfc2136Store:
        return cls.from_credentials(settings.credentials, timeout=timeout)

    @classmethod
    def from_credentials(cls, path: str | None, timeout: float = 10.0) -> Rfc2136Store:
        if not path:
            raise StoreConfigError(
                "rfc2136 store: no credentials file; pass --dane-credentials PATH (the INI "
                "used by certbot-dns-rfc2136) or use -a dns-rfc2136 with its credentials"
            )
        values = read_credentials(path)
        server = values.get("server") or ""
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise StoreConfigError(
                f"rfc2136 store: dns_rfc2136_server in {path} must be an IP address, "
                f"not {server!r}"
            ) from None
        try:
            port = int(values.get("port") or 53)
        except ValueError:
            raise StoreConfigError(
                f"rfc2136 store: dns_rfc2136_port in {path} is not a number"
            ) from None
        for key in ("name", "secret"):
            if not values.get(key):
                raise StoreConfigError(
                    f"rfc2136 store: {path} has no dns_rfc2136_{key}; add it (see "
                    "certbot-dns-rfc2136's documentation)"
                )
        return cls(
            server,
            port,
            values["name"],
            values["secret"],
            values.get("algorithm") or "HMAC-MD5",
            timeout=timeout,
            sign_query=(values.get("sign_query") or "").strip().upper() == "TRUE",
        )

    # Queries --------------------------------------------------------------

    def zone_of(self, owner: str) -> dns.name.Name:
        """The zone apex for ``owner``, as the primary server reports it."""
        if owner in self._zones:
            return self._zones[owner]
        name = dns.name.from_text(owner)
        query = dns.message.make_query(name, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        response = self._query(query, f"find the zone of {owner}")
        for section in (response.answer, response.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA:
                    self._zones[owner] = rrset.name
                    return rrset.name
        raise StoreError(
            f"rfc2136 store: {self.server}:{self.port} is not authoritative for {owner} "
            f"(no SOA in its answer, rcode {dns.rcode.to_text(response.rcode())})"
        )

    def list(self, owner: str) -> RRsetView:
        query = dns.message.make_query(owner, dns.rdatatype.TLSA)
        query.flags &= ~dns.flags.RD
        response = self._query(query, f"list TLSA at {owner}")
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise StoreError(
                f"rfc2136 store: listing TLSA at {owner} failed: "
                f"{dns.rcode.to_text(response.rcode())}"
            )
        name = dns.name.from_text(owner)
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA:
                records = frozenset(Record.from_rdata(owner, rd) for rd in rrset)
                return RRsetView(records, rrset.ttl)
        return RRsetView(frozenset(), None)

    def _query(self, query: dns.message.Message, what: str) -> dns.message.Message:
        if self.sign_query:
            query.use_tsig(self._keyring, self._key_name, algorithm=self._algorithm)
        try:
            response, _ = dns.query.udp_with_fallback(
                query, self.server, timeout=self.timeout, port=self.port
            )
            return response
        except (dns.exception.DNSException, OSError) as err:
            raise StoreError(
                f"rfc2136 store: cannot {what} at {self.server}:{self.port}: {_reason(err)}"
            ) from None

    # Updates --------------------------------------------------------------

    def add(self, records: Iterable[Record], ttl: int) -> None:
        for owner, group in by_owner(records).items():
            update = self._update(owner)
            for record in group:
                update.add(dns.name.from_text(owner), ttl, record.rdata())
            self._send(update, f"add {len(group)} TLSA record(s) at {owner}")
            self._settle(owner, lambda view, g=group: set(g) <= view.records)

    def delete(self, records: Iterable[Record]) -> None:
        for owner, group in by_owner(records).items():
            update = self._update(owner)
            for record in group:
                update.delete(dns.name.from_text(owner), record.rdata())
            self._send(update, f"delete {len(group)} TLSA record(s) at {owner}")
            self._settle(owner, lambda view, g=group: not set(g) & view.records)

    def _settle(self, owner: str, done: Callable[[RRsetView], bool]) -> None:
        """Wait (bounded) until the primary serves the change.

        A server that signs inline applies an update to the signed zone a
        moment after it answered NOERROR; callers expect to list what they
        just wrote. Not settling in time is no error: visibility is decided
        by the observer, never by the store.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while not done(self.list(owner)) and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _update(self, owner: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self.zone_of(owner),
            keyring=self._keyring,
            keyname=self._key_name,
            keyalgorithm=self._algorithm,
        )

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        try:
            response = dns.query.tcp(update, self.server, timeout=self.timeout, port=self.port)
        except (dns.exception.DNSException, OSError) as err:
            raise StoreError(
                f"rfc2136 store: cannot {what} at {self.server}:{self.port}: {_reason(err)}"
            ) from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise StoreError(
                f"rfc2136 store: {self.server}:{self.port} refused to {what}: "
                f"{dns.rcode.to_text(rcode)} (check the TSIG key and the server's update-policy)"
            )


def read_credentials(path: str) -> dict[str, str]:
    """Read certbot-dns-rfc2136's INI with certbot's own reader (same warnings)."""
    from certbot import errors
    from certbot.plugins import dns_common

    try:
        conf = dns_common.CredentialsConfiguration(
            path, lambda v: "dns_rfc2136_" + v.replace("-", "_")
        )
    except errors.PluginError as err:
        raise StoreConfigError(f"rfc2136 store: {err}") from None
    keys = ("server", "port", "name", "secret", "algorithm", "sign_query")
    return {k: v for k in keys if (v := conf.conf(k)) is not None}


def _reason(err: BaseException) -> str:
    if isinstance(err, dns.exception.Timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return type(err).__name__ if not str(err) else str(err)
