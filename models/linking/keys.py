"""Link keys: the traits one campaign's accounts share and unrelated accounts rarely do.

A link key is a pair `(kind, key)`; accounts that present the same pair are linked
through it, and `f"{kind}:{key}"` names the key everywhere downstream (the Kafka key of
the evidence topic, the hub in the cluster graph). Kinds, strongest evidence first:

- `payment`: the hashed payment instrument. One card behind many tenants' accounts is
  rare in honest traffic.
- `tls`: the TLS client fingerprint. Stock client libraries share a few fingerprints with
  thousands of customers (weak by popularity); a campaign's own client build is unique.
- `template`: locality-sensitive banding of the 64-bit prompt SimHash. The hash is cut
  into `TEMPLATE_BANDS` bands of `BAND_BITS` bits, and each *pair* of bands is a key
  `p{i}{j}:{bits_i:04x}{bits_j:04x}` (six per prompt). Two prompts within two bit flips
  of each other (the same template with values filled in) keep at least two bands
  intact, so they share a key; unrelated prompts share one with probability 6 * 2**-32.
  Pairs rather than single bands because a 16-bit band alone collides by chance across
  millions of prompts, and one chance collision would bridge two unrelated campaigns.
- `netua`: client network prefix, ASN and user agent together. Proxies and corporate
  egress put many accounts on one prefix, so this is weak on its own.
- `signup`: the account's creation time in buckets of `signup_bucket_s` seconds: a
  creation burst. The ASN is not part of it because proxied campaigns rotate exits.
- `onset`: the time bucket in which an account was first seen (synchronized onset). It
  depends on the account's history, not on one call, hence `onset_key`.

A field the gateway did not send yields no key of that kind.
"""

from __future__ import annotations

from models.records import ApiCall

TEMPLATE_BANDS = 4
BAND_BITS = 16
BAND_MASK = (1 << BAND_BITS) - 1

# Every kind a key can have, in decreasing strength of evidence.
KINDS: tuple[str, ...] = ("payment", "tls", "template", "netua", "signup", "onset")


def ip_prefix(ip: str) -> str:
    """The network an address belongs to: a prefix as given, an IPv4 /24, an IPv6 /48.

    >>> ip_prefix("203.0.113.7"), ip_prefix("203.0.113.0/24"), ip_prefix("2001:db8:1:2::5")
    ('203.0.113.0/24', '203.0.113.0/24', '2001:db8:1::/48')
    """
    if "/" in ip:  # gateways usually send the anonymised prefix already
        return ip
    if ":" in ip:
        groups = ip.split(":")
        head = [group or "0" for group in groups[:3]]
        return ":".join(head) + "::/48"
    octets = ip.split(".")
    if len(octets) == 4:
        return f"{octets[0]}.{octets[1]}.{octets[2]}.0/24"
    return ip


def template_bands(simhash: int) -> list[int]:
    """The `TEMPLATE_BANDS` bands of a 64-bit SimHash, lowest bits first.

    >>> [f"{band:04x}" for band in template_bands(0xA3F09C1D22E4B7F0)]
    ['b7f0', '22e4', '9c1d', 'a3f0']
    """
    return [(simhash >> (BAND_BITS * band)) & BAND_MASK for band in range(TEMPLATE_BANDS)]


# The band pairs, in key order.
BAND_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (first, second)
    for first in range(TEMPLATE_BANDS)
    for second in range(first + 1, TEMPLATE_BANDS)
)


def template_key(first: int, second: int, bands: list[int]) -> str:
    """The key of the band pair `(first, second)` of a prompt's `bands`.

    >>> template_key(0, 2, [0xB7F0, 0x22E4, 0x9C1D, 0xA3F0])
    'p02:b7f09c1d'
    """
    return f"p{first}{second}:{bands[first]:04x}{bands[second]:04x}"


def template_keys(simhash: int) -> list[str]:
    """The six `template` keys of a 64-bit SimHash, one per pair of bands."""
    bands = template_bands(simhash)
    return [template_key(first, second, bands) for first, second in BAND_PAIRS]


def netua_key(ip: str, asn: int, user_agent: str) -> str:
    """Network prefix, ASN and user agent as one key."""
    return f"{ip_prefix(ip)}|{asn}|{user_agent}"


def bucket(ts: float, bucket_s: float) -> int:
    """The index of the `bucket_s`-second bucket holding `ts` (seconds since the epoch)."""
    return int(ts // bucket_s)


def onset_key(first_seen: float, onset_bucket_s: float = 600.0) -> tuple[str, str]:
    """The `onset` key of an account first seen at `first_seen` (event time, seconds)."""
    return ("onset", str(bucket(first_seen, onset_bucket_s)))


def link_keys(call: ApiCall, signup_bucket_s: float = 600.0) -> list[tuple[str, str]]:
    """Every `(kind, key)` this call presents, in `KINDS` order; `onset` is not among them.

    >>> call = ApiCall(event_id="e1", ts=0.0, tenant_id="org_1", account_id="key_1",
    ...                model="frontier-large", status=200, input_tokens=10, output_tokens=10,
    ...                tls_fingerprint="t13d1516h2_8daaf6152771", ip="203.0.113.0/24",
    ...                asn=64500, user_agent="python-httpx/0.27", simhash=0x1234)
    >>> link_keys(call)[:2]
    [('tls', 't13d1516h2_8daaf6152771'), ('template', 'p01:12340000')]
    >>> link_keys(call)[-1]
    ('netua', '203.0.113.0/24|64500|python-httpx/0.27')
    """
    keys: list[tuple[str, str]] = []
    if call.payment_fingerprint:
        keys.append(("payment", call.payment_fingerprint))
    if call.tls_fingerprint:
        keys.append(("tls", call.tls_fingerprint))
    if call.simhash is not None:
        keys.extend(("template", key) for key in template_keys(call.simhash))
    if call.ip and call.asn is not None and call.user_agent:
        keys.append(("netua", netua_key(call.ip, call.asn, call.user_agent)))
    if call.created_at is not None:
        keys.append(("signup", str(bucket(call.created_at, signup_bucket_s))))
    return keys
