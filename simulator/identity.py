"""Who sends the traffic: tenant and key ids, networks, client fingerprints, accounts.

Everything here is drawn from a caller-supplied ``random.Random`` so a scenario is
reproducible from its seed; hashing uses ``hashlib`` (never ``hash()``, which is salted
per process).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime

#: (asn, country) choices per kind of network an account connects from.
NETWORKS: dict[str, tuple[tuple[int, str], ...]] = {
    "residential": (
        (7922, "US"), (701, "US"), (20115, "US"), (3320, "DE"), (2856, "GB"), (12322, "FR"),
        (3215, "FR"), (4766, "KR"), (2516, "JP"), (9829, "IN"), (28573, "BR"), (1221, "AU"),
        (6830, "NL"), (5432, "BE"), (812, "CA"),
    ),
    "hosting": (
        (16509, "US"), (14618, "US"), (15169, "US"), (8075, "US"), (24940, "DE"),
        (14061, "US"), (16276, "FR"), (16509, "IE"), (16509, "SG"), (63949, "US"),
    ),
    "vpn": ((9009, "NL"), (212238, "CH"), (60068, "SE"), (9009, "US"), (136787, "GB")),
    "proxy": (
        (45102, "SG"), (132203, "HK"), (136907, "SG"), (20473, "JP"), (9009, "HK"),
        (4837, "HK"), (45090, "SG"), (396982, "US"), (55990, "HK"), (38001, "SG"),
    ),
    "corporate": ((3356, "US"), (174, "US"), (6939, "US"), (1299, "GB"), (3257, "DE")),
}  # fmt: skip

_RESERVED_FIRST_OCTETS = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203, 224})


@dataclass(frozen=True, slots=True)
class Egress:
    """One network egress: an anonymised /24 prefix with its ASN and country."""

    ip: str
    asn: int
    country: str


class IdMint:
    """Unique, random-looking tenant and key ids drawn from one planning RNG."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._issued: set[str] = set()

    def _mint(self, prefix: str, bits: int) -> str:
        while True:
            candidate = f"{prefix}{self._rng.getrandbits(bits):0{bits // 4}x}"
            if candidate not in self._issued:
                self._issued.add(candidate)
                return candidate

    def tenant(self) -> str:
        """A new tenant (organisation) id like ``org_3fa9c01b``."""
        return self._mint("org_", 32)

    def account(self) -> str:
        """A new API-key id like ``key_0c4e7a91b2``, unique across the fleet."""
        return self._mint("key_", 40)

    def payment(self) -> str:
        """A new hashed payment-instrument fingerprint like ``pf_9a8b7c1d``."""
        return self._mint("pf_", 32)


def egress(rng: random.Random, network: str) -> Egress:
    """A random /24 egress prefix on a network of kind ``network`` (see :data:`NETWORKS`)."""
    asn, country = rng.choice(NETWORKS[network])
    first = rng.randrange(11, 224)
    while first in _RESERVED_FIRST_OCTETS:
        first = rng.randrange(11, 224)
    return Egress(f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.0/24", asn, country)


def tls_fingerprint(user_agent: str, variant: str | int = 0) -> str:
    """A JA4-style TLS client fingerprint for a client library (and build ``variant``)."""
    digest = hashlib.sha256(f"{user_agent}|{variant}".encode()).hexdigest()
    ciphers = 10 + int(digest[24:26], 16) % 9
    extensions = 10 + int(digest[26:28], 16) % 8
    return f"t13d{ciphers:02d}{extensions:02d}h2_{digest[:12]}_{digest[12:24]}"


def client_group(egress_: Egress, user_agent: str, tls: str) -> dict[str, object]:
    """The contract's ``client`` group for one egress and client library."""
    return {
        "ip": egress_.ip,
        "asn": egress_.asn,
        "country": egress_.country,
        "user_agent": user_agent,
        "tls_fingerprint": tls,
    }


def rfc3339_seconds(epoch_s: float) -> str:
    """``epoch_s`` (seconds since the epoch) as RFC 3339 UTC with whole seconds and ``Z``."""
    return datetime.fromtimestamp(int(epoch_s), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
