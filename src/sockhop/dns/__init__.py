"""DNS: an authoritative name server (the BIND role) and a stub resolver (the dig role).

zone.py       RFC 1035 master files (read by dnspython) indexed for answering
authority.py  the answer to one question: CNAME chains, wildcards, NXDOMAIN/NODATA, referrals
server.py     wire bytes in and out, the cache of encoded replies, reload
protocol.py   UDP datagrams and TCP's length-prefixed stream (and AXFR) around that core; TLS wraps the TCP one
resolver.py   the client: ``resolve(name, rdtype, server)`` and ``sockhop resolve``
rrl.py        response rate limiting per client prefix and answer class
cookies.py    DNS cookies (RFC 7873/9018): a client that returns ours is not rate limited
proofs.py     a pre-signed zone's answers with DO: RRSIGs and NSEC/NSEC3 proofs
signer.py     online signing: RRSIGs on first use, minimally covering NSEC, a signed AXFR
keys.py       signing keys on disk; keycommands.py: ``sockhop dns keygen`` and ``sockhop dns ds``
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # resolve() and its errors load dnspython; keep `import sockhop.dns` (the CLI's) light until they are used
    if name in __all__:
        from sockhop.dns import resolver

        return getattr(resolver, name)
    raise AttributeError(name)


__all__ = [
    "BadQuestion",
    "CertificateError",
    "MalformedReply",
    "NoSuchName",
    "Refused",
    "ResolveError",
    "ServerFailure",
    "Timeout",
    "query",
    "resolve",
]
