"""One validated TLSA lookup, as a DANE client would make it.

The operator commands (``status``, ``verify``, ``reset``) ask the same
question a sending mail server asks: what does a validating resolver return
for the TLSA RRset, and does it vouch for it with the AD bit? The answer
keeps the response code, so a validation failure (SERVFAIL) can be told
apart from an empty answer in the messages an administrator reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from .observe import Address, ObserveError, chain_end, parse_address, system_resolver
from .state import Settings
from .tlsa import Record

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Answer:
    """What the resolver returned for the TLSA RRset at one owner name."""

    owner: str
    rcode: str
    ad: bool
    records: frozenset[Record]

    @property
    def validated(self) -> frozenset[Record]:
        """The records a DANE client may use: none unless the answer had AD."""
        return self.records if self.ad and self.rcode == "NOERROR" else frozenset()


def resolver_address(settings: Settings | None, override: str | None) -> Address:
    """``--resolver`` when given, else the lineage's resolver, else the system's.

    A bad ``--resolver`` raises ValueError (a usage error); no configured
    resolver at all raises ObserveError.
    """
    if override:
        return parse_address(override)
    if settings is not None and settings.resolver:
        return parse_address(settings.resolver)
    return system_resolver()


def resolve(resolver: Address, owner: str, timeout: float = DEFAULT_TIMEOUT) -> Answer:
    """Ask the resolver for TLSA at ``owner`` with DO and AD set."""
    query = dns.message.make_query(owner, dns.rdatatype.TLSA, want_dnssec=True)
    query.flags |= dns.flags.AD
    try:
        response, _ = dns.query.udp_with_fallback(
            query, resolver[0], timeout=timeout, port=resolver[1]
        )
    except (dns.exception.DNSException, OSError, ValueError) as err:
        reason = "timed out" if isinstance(err, dns.exception.Timeout) else str(err)
        raise ObserveError(
            f"cannot resolve TLSA at {owner} through {resolver[0]}:{resolver[1]}: {reason}"
        ) from None
    # An owner that is an alias has its records at the end of the CNAME chain.
    name = dns.name.from_text(chain_end(response, owner)[0])
    records: frozenset[Record] = frozenset()
    for rrset in response.answer:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA:
            records = frozenset(Record.from_rdata(owner, rd) for rd in rrset)
    return Answer(
        owner=owner,
        rcode=dns.rcode.to_text(response.rcode()),
        ad=bool(response.flags & dns.flags.AD),
        records=records,
    )


def resolve_all(
    resolver: Address, owners: list[str] | set[str], timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Answer]:
    return {owner: resolve(resolver, owner, timeout) for owner in sorted(set(owners))}


def describe_answer(answer: Answer, resolver: Address) -> str:
    """Why an answer is unusable for DANE, in words, or '' when it is usable."""
    where = f"{resolver[0]}:{resolver[1]}"
    if answer.rcode == "SERVFAIL":
        return (
            f"the resolver {where} answered SERVFAIL for TLSA at {answer.owner} "
            "(DNSSEC validation failed, or the zone's servers do not answer)"
        )
    if answer.rcode not in ("NOERROR", "NXDOMAIN"):
        return f"the resolver {where} answered {answer.rcode} for TLSA at {answer.owner}"
    if answer.records and not answer.ad:
        return (
            f"no AD: the resolver {where} returned TLSA at {answer.owner} without the AD bit "
            "(it does not validate, or the zone is not signed)"
        )
    if not answer.records:
        return f"no TLSA records at {answer.owner} (asked {where})"
    return ""
