"""Where a replyUrl may point: public unicast addresses only, judged on the host the HTTP client will use.

The check must read the host exactly as aiohttp will connect to it. A URL's text is not that
host: yarl normalises it first (NFKC, then IDNA), so ``１２７.０.０.１``, ``127。0。0。1`` or
``①②⑦.⓪.⓪.①`` all become ``127.0.0.1``; and the C resolver reads ``2130706433``, ``0x7f.1`` or
``127.1`` as IPv4 literals although :mod:`ipaddress` does not. So every check here starts from
:func:`client_host`, and numeric spellings are parsed the way ``getaddrinfo`` parses them.
"""

from __future__ import annotations

import ipaddress
import socket

import yarl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_NAMES = ("localhost", "localhost.localdomain")
# RFC 6052's well-known NAT64 prefix embeds an IPv4 address in its last 32 bits; 64:ff9b:1::/48
# is the local-use NAT64 prefix (RFC 8215), private by definition.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# Deprecated IPv4-compatible addresses (::a.b.c.d).
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# IANA's special-purpose registries, whole: Python's is_global misses some of them (3.11 calls
# 192.0.0.192, Oracle Cloud's metadata address, fec0::/10 and 3fff::/20 global).
_SPECIAL_PURPOSE = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "2620:4f:8000::/48", "3fff::/20",
    "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))


def client_host(url: str | yarl.URL) -> str | None:
    """The host aiohttp connects to for ``url`` (normalised, IDNA-encoded, no brackets), or None."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
        host = parsed.raw_host
    except (ValueError, TypeError, UnicodeError):
        return None
    if not host:
        return None
    return host.lower()


def is_forbidden_ip(ip: IPAddress) -> bool:
    """True for anything but a public unicast address, also when one is embedded in IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_forbidden_ip(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_forbidden_ip(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL or ip in _IPV4_COMPATIBLE:
            return True
        if ip.sixtofour is not None and is_forbidden_ip(ip.sixtofour):
            return True
        if ip.teredo is not None and is_forbidden_ip(ip.teredo[1]):
            return True
    if any(ip in network for network in _SPECIAL_PURPOSE if network.version == ip.version):
        return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_reserved
        or ip.is_private
    )


def numeric_address(host: str) -> IPAddress | None:
    """The address a numeric host stands for, in any spelling the C resolver accepts; None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    try:
        return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0])
    except (IndexError, ValueError):
        return None


def host_verdict(host: str) -> bool | None:
    """False when ``host`` (as :func:`client_host` gives it) is local or private, True when it is a
    public address, None for a name that only the resolver can judge (at connect time)."""
    name = host.rstrip(".")
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return False
    address = numeric_address(name)
    if address is None:
        return None
    return not is_forbidden_ip(address)
