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

BIND 9 and Knot DNS are both primaries this store is tested against, and
they differ in ways the store absorbs. Knot answers an update only once it
has applied and signed it (BIND answers first and signs a moment later:
hence :meth:`Rfc2136Store._settle`); Knot keeps an RRset's TTL when a present
record is added again (hence :meth:`Rfc2136Store.retime_many` deletes and adds
in one update); Knot answers an update for a zone it does not serve with an
unsigned NOTAUTH, which dnspython reports as a missing TSIG (hence the second
look in :meth:`Rfc2136Store._unverified`); and Knot refuses a key its acl does
not allow with BADKEY where BIND says REFUSED.

Failures reach the operator in their terms, never dnspython's: what failed,
the likely cause, and what to change, naming the credentials file and its
``dns_rfc2136_*`` keys (or the server's update-policy / acl), never a secret.
:class:`_Advice` holds every such sentence.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

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

from .. import dnsio
from ..tlsa import Record
from .base import (
    BatchStore,
    Change,
    Outcomes,
    RRsetView,
    StoreConfigError,
    StoreError,
    Views,
    by_owner,
    plugin_credentials,
)

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


class Rfc2136Store(BatchStore):
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
        credentials: str | None = None,
    ) -> None:
        """``credentials`` is the INI the values came from, named in messages."""
        self.server = server
        self.port = port
        self.timeout = timeout
        self.sign_query = sign_query
        self.credentials = credentials
        alg = ALGORITHMS.get(algorithm.strip().upper())
        if alg is None:
            raise StoreConfigError(
                f"rfc2136 store: unknown TSIG algorithm {algorithm!r}; use one of "
                f"{', '.join(ALGORITHMS)}"
            )
        try:
            self.key_name = dns.name.from_text(key_name)
            self._keyring = dns.tsigkeyring.from_text({key_name: secret})
        except (dns.exception.DNSException, ValueError, TypeError):
            fix = (
                f"check dns_rfc2136_name and dns_rfc2136_secret in {credentials}"
                if credentials
                else "check the TSIG key"
            )
            raise StoreConfigError(
                "rfc2136 store: the TSIG key name or secret is malformed (the secret is a "
                f"base64 string); {fix}"
            ) from None
        self.algorithm = alg
        self._zones: dict[str, dns.name.Name] = {}
        self._advice = _Advice(self)

    @classmethod
    def from_settings(
        cls, settings: Settings, config_dir: str, timeout: float = 10.0
    ) -> Rfc2136Store:
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
            credentials=path,
        )

    # Queries --------------------------------------------------------------

    def zone_of(self, owner: str) -> dns.name.Name:
        """The zone apex for ``owner``, as the primary server reports it."""
        return _raise(self.zones_of([owner])[owner])

    def zones_of(self, owners: Iterable[str]) -> dict[str, dns.name.Name | StoreError]:
        """:meth:`zone_of` for each owner, the unknown ones asked at once."""
        unknown = sorted({o for o in owners if o not in self._zones})
        questions = []
        for owner in unknown:
            query = dns.message.make_query(owner, dns.rdatatype.SOA)
            query.flags &= ~dns.flags.RD
            questions.append(query)
        found: dict[str, dns.name.Name | StoreError] = {}
        answers = self._ask(questions, [f"find the zone of {o}" for o in unknown])
        for owner, response in zip(unknown, answers, strict=True):
            found[owner] = response if isinstance(response, StoreError) else self._apex(
                owner, response
            )
        zones = {o: self._zones[o] for o in owners if o in self._zones}
        return {**zones, **found}

    def _apex(self, owner: str, response: dns.message.Message) -> dns.name.Name | StoreError:
        for section in (response.answer, response.authority):
            for rrset in section:
                if rrset.rdtype == dns.rdatatype.SOA:
                    self._zones[owner] = rrset.name
                    return rrset.name
        return StoreError(
            f"rfc2136 store: cannot find the zone of {owner}: "
            + self._advice.no_zone(owner, response.rcode())
        )

    def list(self, owner: str) -> RRsetView:
        return _raise(self.list_many([owner])[0])

    def list_many(self, owners: Sequence[str]) -> Views:
        questions = []
        for owner in owners:
            query = dns.message.make_query(owner, dns.rdatatype.TLSA)
            query.flags &= ~dns.flags.RD
            questions.append(query)
        answers = self._ask(questions, [f"list TLSA at {o}" for o in owners])
        return [
            a if isinstance(a, StoreError) else self._view(o, a)
            for o, a in zip(owners, answers, strict=True)
        ]

    def _view(self, owner: str, response: dns.message.Message) -> RRsetView | StoreError:
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return StoreError(
                f"rfc2136 store: cannot list TLSA at {owner}: "
                + self._advice.query_rcode(response.rcode())
            )
        name = dns.name.from_text(owner)
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA:
                records = frozenset(Record.from_rdata(owner, rd) for rd in rrset)
                return RRsetView(records, rrset.ttl)
        return RRsetView(frozenset(), None)

    def _ask(
        self, queries: Sequence[dns.message.Message], whats: Sequence[str]
    ) -> Sequence[dns.message.Message | StoreError]:
        """Send all queries at once; a StoreError in place of each failed one."""
        if not queries:
            return []
        if self.sign_query:
            for query in queries:
                query.use_tsig(self._keyring, self.key_name, algorithm=self.algorithm)
        address = (self.server, self.port)
        answers = dnsio.exchange([(q, address) for q in queries], self.timeout)
        return [
            StoreError(f"rfc2136 store: cannot {what}: {self._advice.failure(answer)}")
            if isinstance(answer, Exception)
            else answer
            for what, answer in zip(whats, answers, strict=True)
        ]

    # Updates --------------------------------------------------------------

    def change_many(self, verb: str, items: Sequence[Change]) -> Outcomes:
        """Single-record adds and deletes; a TTL change deletes and adds each
        record in one update (Knot keeps an RRset's TTL when a present record
        is only added again, BIND changes it either way)."""
        if verb == "delete":
            changes = [[_Change(r, None) for r in records] for records, _ in items]
            return self._apply(changes, verb, lambda view, rs: not set(rs) & view.records)
        if verb == "retime":
            changes = [
                [c for r in records for c in (_Change(r, None), _Change(r, ttl))]
                for records, ttl in items
            ]
            verb = "change the TTL of"
        else:
            changes = [[_Change(r, ttl) for r in records] for records, ttl in items]
        return self._apply(changes, verb, lambda view, rs: set(rs) <= view.records)

    def _apply(
        self,
        items: Sequence[Sequence[_Change]],
        verb: str,
        done: Callable[[RRsetView, Sequence[Record]], bool],
    ) -> Outcomes:
        """Send every item's changes, one update per zone (and size), then settle.

        One update for many owners is still atomic at the primary, and an
        inline-signing primary signs it in one pass instead of once per owner.
        """
        zones = self.zones_of({c.record.owner for item in items for c in item})
        failed: dict[str, StoreError] = {
            owner: zone for owner, zone in zones.items() if isinstance(zone, StoreError)
        }
        by_zone: dict[dns.name.Name, list[_Change]] = {}
        for change in sorted({c for item in items for c in item}, key=_Change.order):
            zone = zones[change.record.owner]
            if isinstance(zone, dns.name.Name):
                by_zone.setdefault(zone, []).append(change)
        for zone, changes in by_zone.items():
            for chunk in _chunks(changes):
                error = self._send_changes(zone, chunk, verb)
                if error is not None:
                    failed.update((c.record.owner, error) for c in chunk)
                    continue
                # Settled before the next update: an inline-signing BIND can
                # lose a large update that arrives while it applies the last.
                unsettled = self._settle(sorted({c.record for c in chunk}), done)
                failed.update((o, self._unsettled(o, verb)) for o in unsettled)
        return [
            next((failed[c.record.owner] for c in item if c.record.owner in failed), None)
            for item in items
        ]

    def _unsettled(self, owner: str, verb: str) -> StoreError:
        """A change the primary accepted but does not serve: never taken as done.

        RFC 2136 (section 3.4.2.2) has a server ignore, without an error,
        an update that would put a record next to a CNAME.
        """
        return StoreError(
            f"rfc2136 store: {self.server}:{self.port} accepted the update to {verb} TLSA "
            f"records at {owner} but does not serve the change after {self.timeout:g} s; if "
            f"{owner} holds a CNAME the server ignores records next to it (RFC 2136 section "
            "3.4.2.2): publish at the CNAME's target or remove the CNAME"
        )

    def _send_changes(
        self, zone: dns.name.Name, changes: Sequence[_Change], verb: str
    ) -> StoreError | None:
        update = dns.update.UpdateMessage(
            zone, keyring=self._keyring, keyname=self.key_name, keyalgorithm=self.algorithm
        )
        for change in changes:
            name = dns.name.from_text(change.record.owner)
            if change.ttl is None:
                update.delete(name, change.record.rdata())
            else:
                update.add(name, change.ttl, change.record.rdata())
        owners = sorted({c.record.owner for c in changes})
        where = owners[0] if len(owners) == 1 else f"{len(owners)} names in {zone}"
        try:
            self._send(update, f"{verb} {len(changes)} TLSA record(s) at {where}", zone)
        except StoreError as err:
            return err
        return None

    def _settle(
        self, records: Sequence[Record], done: Callable[[RRsetView, Sequence[Record]], bool]
    ) -> list[str]:
        """Wait (bounded) until the primary serves the changes; the owners it does not.

        A server that signs inline applies an update to the signed zone a
        moment after it answered NOERROR; callers expect to list what they
        just wrote, and no record counts as published that the server does
        not serve. (Visibility everywhere is decided by the observer.)
        """
        waiting = by_owner(records)
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while waiting:
            owners = sorted(waiting)
            views = self.list_many(owners)
            for owner, view in zip(owners, views, strict=True):
                if isinstance(view, RRsetView) and done(view, waiting[owner]):
                    del waiting[owner]
            if not waiting or time.monotonic() >= deadline:
                return sorted(waiting)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        return []

    def _send(self, update: dns.update.UpdateMessage, what: str, zone: dns.name.Name) -> None:
        """Send one update over TCP; a StoreError in the operator's terms if it failed."""
        try:
            response = dns.query.tcp(update, self.server, timeout=self.timeout, port=self.port)
        except dns.tsig.PeerBadTime:
            raise StoreError(
                f"rfc2136 store: cannot {what}: {self._advice.bad_time(self._skew(update))}"
            ) from None
        except dns.exception.FormError as err:
            # An answer dnspython would not take: an unsigned one (Knot for a
            # zone it does not serve, PowerDNS for a key it refuses), or no DNS.
            unsigned = self._unverified(update)
            reason = (
                self._advice.unsigned(unsigned.rcode(), zone)
                if unsigned is not None and not unsigned.had_tsig
                else self._advice.failure(err)
            )
            raise StoreError(f"rfc2136 store: cannot {what}: {reason}") from None
        except (dns.exception.DNSException, OSError) as err:
            raise StoreError(
                f"rfc2136 store: cannot {what}: {self._advice.failure(err, zone)}"
            ) from None
        # An unsigned answer to a signed update proves nothing, NOERROR
        # included (dnspython before 2.9 lets it through).
        if not response.had_tsig:
            reason = self._advice.unsigned(response.rcode(), zone)
            raise StoreError(f"rfc2136 store: cannot {what}: {reason}")
        if response.rcode() != dns.rcode.NOERROR:
            reason = self._advice.update_rcode(response.rcode(), zone)
            raise StoreError(f"rfc2136 store: cannot {what}: {reason}")

    def _unverified(self, update: dns.update.UpdateMessage) -> dns.message.Message | None:
        """Send the update again and read the answer without verifying it.

        Only to explain a failure: which rcode an unsigned answer carried, or
        the server's clock in a BADTIME answer (RFC 8945, section 5.2.3). The
        update was refused, so sending it again changes nothing; an add or a
        single-record delete is idempotent anyway. None where the answer
        cannot be read this way (a dnspython before 2.7 verifies every TSIG).
        """
        expiration = time.time() + self.timeout
        try:
            with socket.create_connection((self.server, self.port), self.timeout) as sock:
                dns.query.send_tcp(sock, update, expiration)
                answer, _ = dns.query.receive_tcp(
                    sock, expiration, keyring=False, request_mac=update.mac
                )
        except Exception:  # noqa: BLE001 - a second look never fails the operation
            return None
        return answer

    def _skew(self, update: dns.update.UpdateMessage) -> int | None:
        """Seconds this host's clock is ahead of the server's, from its BADTIME
        answer; None if unknown."""
        answer = self._unverified(update)
        if answer is None or not answer.had_tsig:
            return None
        tsig = answer.tsig[0]
        if tsig.error != dns.rcode.BADTIME or len(tsig.other) != 6:
            return None
        return int(tsig.time_signed) - int.from_bytes(tsig.other, "big")


@dataclass(frozen=True, order=True)
class _Change:
    """One record to add (with its TTL) or, with ``ttl`` None, to delete."""

    record: Record
    ttl: int | None

    def order(self) -> tuple[Record, bool, int]:
        """Records in order; a record's delete before its add (a TTL change)."""
        return self.record, self.ttl is not None, self.ttl or 0


#: Bytes of changes per update message: well inside the 64 KiB a DNS message
#: over TCP can carry, TSIG and the zone section included.
UPDATE_BYTES = 32768


def _chunks(changes: list[_Change]) -> Iterator[list[_Change]]:
    chunk: list[_Change] = []
    size = 0
    for change in changes:
        # Owner (uncompressed), type, class, TTL, length, then the rdata.
        cost = len(change.record.owner) + 12 + len(change.record.rdata().to_digestable())
        # A record's delete and add (a TTL change) stay in one update.
        if chunk and size + cost > UPDATE_BYTES and change.record != chunk[-1].record:
            yield chunk
            chunk, size = [], 0
        chunk.append(change)
        size += cost
    if chunk:
        yield chunk


_T = TypeVar("_T")


def _raise(value: _T | StoreError) -> _T:
    if isinstance(value, StoreError):
        raise value
    return value


def read_credentials(path: str) -> dict[str, str]:
    """Read certbot-dns-rfc2136's INI with certbot's own reader (same warnings)."""
    conf = plugin_credentials(path, "rfc2136", "dns_rfc2136_")
    keys = ("server", "port", "name", "secret", "algorithm", "sign_query")
    return {k: v for k in keys if (v := conf.conf(k)) is not None}


class _Advice:
    """Every failure as one line in the operator's terms: what failed, the
    likely cause, and what to change.

    dnspython speaks of peers and signatures ("The peer didn't like the
    signature we sent"); an operator changes a credentials file, a clock, or
    the server's configuration. A store built from certbot's INI names that
    file and its ``dns_rfc2136_*`` keys; one built from arguments speaks of
    "the TSIG key". The key is named, its secret never.
    """

    def __init__(self, store: Rfc2136Store) -> None:
        # The store itself, not a copy of its address and timeout.
        self.store = store

    @property
    def server(self) -> str:
        return f"{self.store.server}:{self.store.port}"

    @property
    def key(self) -> str:
        return self.store.key_name.to_text()

    def _tsig_key(self) -> str:
        algorithm = self.store.algorithm.to_text(omit_final_dot=True).upper()
        return f"TSIG key '{self.key}' ({algorithm})"

    def _keys(self, *names: str) -> str:
        """The credentials keys to change: in the file, or in plain words."""
        if self.store.credentials:
            keys = [f"dns_rfc2136_{name}" for name in names]
            listed = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]
            return f"{listed} in {self.store.credentials}"
        if names[0] in ("server", "port"):
            return "the server address and port"
        return "the TSIG key"

    def _to_primary(self) -> str:
        return f"set {self._keys('server', 'port')} to the zone's primary"

    # TSIG errors the server reported -------------------------------------

    def bad_signature(self) -> str:
        return (
            f"{self.server} rejected the TSIG signature (BADSIG): the secret for key "
            f"'{self.key}' differs from the server's; set {self._keys('secret')} to the "
            "server's secret for that key"
        )

    def bad_key(self, zone: dns.name.Name | None) -> str:
        """BADKEY: to an update (``zone`` known) or to a signed query."""
        fix = f"set {self._keys('name', 'algorithm')} to a key the server has"
        if zone is None:
            return (
                f"{self.server} does not accept {self._tsig_key()} (BADKEY): it has no key of "
                f"that name and algorithm; {fix}"
            )
        return (
            f"{self.server} does not accept {self._tsig_key()} for zone {zone} (BADKEY): it has "
            "no key of that name and algorithm, or the zone's update-policy or acl does not "
            f"allow it; {fix}, or allow the key to update the zone on the server"
        )

    def bad_time(self, skew: int | None) -> str:
        if skew is None:
            gap = "the clocks of this host and the server differ by more than TSIG allows"
        else:
            side = "ahead of" if skew > 0 else "behind"
            gap = f"this host's clock is {abs(skew)} s {side} the server's, more than TSIG allows"
        return (
            f"{self.server} rejected the TSIG time (BADTIME): {gap}; set both clocks right "
            "(NTP)"
        )

    # Answers this host cannot trust --------------------------------------

    def unverified(self, err: BaseException) -> str:
        """The answer's TSIG does not verify here (dns.tsig.BadSignature and kin)."""
        if isinstance(err, dns.tsig.BadTime):
            return (
                f"the answer from {self.server} is signed at a time too far from this host's "
                "clock for TSIG; set both clocks right (NTP)"
            )
        return (
            f"the answer from {self.server} does not verify with {self._tsig_key()}: another "
            "server answered, or something on the way changed the answer; check that "
            f"{self._keys('server', 'port')} name the primary itself"
        )

    def unsigned(self, rcode: dns.rcode.Rcode, zone: dns.name.Name) -> str:
        """An unsigned answer to a signed update: the server did not take the key,
        or (Knot's NOTAUTH) does not serve the zone."""
        if rcode == dns.rcode.NOTAUTH:
            return (
                f"{self.server} does not serve zone {zone} as a primary (an unsigned "
                f"NOTAUTH); {self._to_primary()}"
            )
        if rcode == dns.rcode.NOERROR:
            return (
                f"{self.server} answered without a TSIG signature, so the answer cannot be "
                f"trusted; check that {self._keys('server', 'port')} name the primary itself"
            )
        return (
            f"{self.server} answered {dns.rcode.to_text(rcode)} without a TSIG signature: it "
            f"does not take {self._tsig_key()} for zone {zone}; check "
            f"{self._keys('name', 'secret', 'algorithm')} against the server's key, and the "
            "zone's update ACL on the server"
        )

    # Signed answers other than NOERROR -----------------------------------

    def update_rcode(self, rcode: dns.rcode.Rcode, zone: dns.name.Name) -> str:
        if rcode == dns.rcode.REFUSED:
            return (
                f"{self.server} refused the update (REFUSED): the update-policy or acl of zone "
                f"{zone} does not let key '{self.key}' change TLSA records; allow it on the "
                f"server (BIND: grant {self.key} zonesub TLSA), or set {self._keys('name')} "
                "to a key that may"
            )
        if rcode == dns.rcode.NOTAUTH:
            return f"{self.server} is not authoritative for zone {zone} (NOTAUTH); " + (
                self._to_primary()
            )
        if rcode == dns.rcode.NOTZONE:
            return (
                f"{self.server} says a name of the update is outside zone {zone} (NOTZONE): the "
                "zone changed since this run asked for it; run again, and ask the server for "
                "the name's SOA to see which zone holds it now"
            )
        if rcode == dns.rcode.SERVFAIL:
            return (
                f"{self.server} failed to apply the update (SERVFAIL), a problem on the server "
                "(zone not loaded, journal or signing error); its log says which"
            )
        return f"{self.server} answered {dns.rcode.to_text(rcode)} to the update"

    def no_zone(self, owner: str, rcode: dns.rcode.Rcode) -> str:
        """The answer to the SOA question named no zone."""
        return (
            f"{self.server} is not authoritative for {owner} (no SOA in its answer, rcode "
            f"{dns.rcode.to_text(rcode)}); set {self._keys('server', 'port')} to the primary "
            "of the zone that holds the name"
        )

    def query_rcode(self, rcode: dns.rcode.Rcode) -> str:
        if rcode == dns.rcode.SERVFAIL:
            return (
                f"{self.server} answered SERVFAIL, a problem on the server (zone not "
                "loaded?); its log says which"
            )
        return (
            f"{self.server} answered {dns.rcode.to_text(rcode)}; check that "
            f"{self._keys('server', 'port')} name the zone's primary and that it answers "
            "this host"
        )

    # Anything dnspython or the network raised ----------------------------

    def failure(self, err: BaseException, zone: dns.name.Name | None = None) -> str:
        if isinstance(err, dns.tsig.PeerBadSignature):
            return self.bad_signature()
        if isinstance(err, dns.tsig.PeerBadKey):
            return self.bad_key(zone)
        if isinstance(err, dns.tsig.PeerBadTime):
            return self.bad_time(None)
        if isinstance(err, dns.tsig.PeerError):
            return (
                f"{self.server} rejected the TSIG signature with another error than BADSIG, "
                f"BADKEY or BADTIME; check {self._keys('name', 'secret', 'algorithm')} against "
                "the server's key"
            )
        if isinstance(
            err, (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm, dns.tsig.BadTime)
        ):
            return self.unverified(err)
        address = self._keys("server", "port")
        if isinstance(err, dns.exception.Timeout):
            return (
                f"no answer from {self.server} (timed out after {self.store.timeout:g} s); "
                f"check that {address} name the zone's primary and that it answers there "
                "over UDP and TCP"
            )
        if isinstance(err, ConnectionRefusedError):
            return f"{self.server} refused the connection (nothing listens there); check {address}"
        if isinstance(err, OSError):
            return f"{self.server}: {err.strerror or type(err).__name__}; check {address}"
        return (
            f"{self.server} sent an answer that is not DNS ({str(err) or type(err).__name__}); "
            f"check that {address} name a DNS server"
        )
