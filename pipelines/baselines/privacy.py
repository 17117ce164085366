"""The privacy guard: report text goes to an endpoint off this machine or private network only on request.

An endpoint counts as local when its host is `localhost`, a `*.local` / `*.localhost` name, or
resolves only to loopback or private addresses (127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12,
192.168.0.0/16, fc00::/7). Anything else, including a host that does not resolve, needs
`allow_remote`; without it `check_endpoint` raises before a single request is built.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

log = logging.getLogger(__name__)

LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
))
LOCAL_SUFFIXES = (".local", ".localhost")

# host -> the addresses it resolves to; replaceable in tests (no DNS there).
Resolver = Callable[[str], list[str]]


class RemoteEndpointRefused(ValueError):
    """The endpoint is off this machine / private network and --allow-remote was not given."""


@dataclass(frozen=True)
class Endpoint:
    """What the guard found out about a base URL."""

    url: str
    host: str
    local: bool
    addresses: tuple[str, ...]


def resolve_host(host: str) -> list[str]:
    """Every address `host` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return sorted({info[4][0] for info in infos})


def is_local_address(address: str) -> bool:
    """True for loopback and private-network addresses (IPv4-mapped IPv6 included)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in LOCAL_NETWORKS if net.version == ip.version)


def inspect_endpoint(url: str, resolver: Resolver = resolve_host) -> Endpoint:
    """Parse `url` and decide whether its host is local; raises ValueError for a URL without a host."""
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    if parsed.scheme not in ("http", "https") or not host:
        raise ValueError(f"base URL {url!r} must look like http(s)://host[:port]/v1")
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return Endpoint(url, host, True, ())
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        addresses = resolver(host)
    local = bool(addresses) and all(is_local_address(a) for a in addresses)
    return Endpoint(url, host, local, tuple(addresses))


def check_endpoint(url: str, allow_remote: bool, resolver: Resolver = resolve_host) -> Endpoint:
    """The endpoint, if report text may be sent to it; else RemoteEndpointRefused (nothing was sent)."""
    endpoint = inspect_endpoint(url, resolver)
    if endpoint.local:
        return endpoint
    where = f"resolves to {', '.join(endpoint.addresses)}" if endpoint.addresses else "does not resolve here"
    if not allow_remote:
        raise RemoteEndpointRefused(
            f"refusing to send report text to {endpoint.host} ({where}): it is not on this machine or a "
            "private network. Nothing was sent. If the data may leave the hospital (e.g. public, "
            "de-identified Open-i reports), repeat with --allow-remote (a study: allow_remote: true)"
        )
    log.warning("sending report text to remote endpoint %s (%s): --allow-remote was given",
                endpoint.host, where)
    return endpoint
