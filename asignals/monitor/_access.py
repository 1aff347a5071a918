"""Who may see the monitor: clients on this machine by default, that asked
for it by a name the monitor answers to, that did not come through a
proxy, from its own pages."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from .._exceptions import ArgumentError

#: Headers that a reverse proxy adds: a request that has one came through a
#: proxy, whatever the client address the server took from it.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host", "via")


def is_loopback(connection: HTTPConnection) -> bool:
    """Whether the client is on this machine (127.0.0.0/8 or ::1): the
    monitor's default ``allow``. Whatever ``allow`` is, the monitor also
    checks the ``Host`` header against its ``hosts`` (loopback names by
    default), which keeps out web pages that reach a local server by DNS
    rebinding, and refuses requests that came through a proxy."""
    client = connection.client
    return client is not None and is_loopback_address(client.host)


def is_loopback_address(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback_name(hostname: str | None) -> bool:
    name = (hostname or "").lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or is_loopback_address(name)


def host_names(hosts: Collection[str] | None) -> tuple[str, ...] | None:
    """Check ``hosts`` (None: loopback names only)."""
    if hosts is None:
        return None
    if isinstance(hosts, str) or not all(isinstance(h, str) and h for h in hosts):
        raise ArgumentError(
            "hosts must be a list of the host names the monitor answers to, such as "
            '["localhost", "monitor.example.com", "*.example.com"] ("*" for any: then '
            f"only allow= keeps others out), not {hosts!r}"
        )
    return tuple(h.lower().rstrip(".") for h in hosts)


def host_allowed(hosts: tuple[str, ...] | None, hostname: str | None) -> bool:
    """Whether a request for ``hostname`` is one the monitor answers."""
    if hosts is None:
        return is_loopback_name(hostname)
    name = (hostname or "").lower().rstrip(".")
    for host in hosts:
        if host == "*" or host == name:
            return True
        if host.startswith("*.") and name.endswith(host[1:]):
            return True
    return False


def proxied(connection: HTTPConnection) -> str | None:
    """The proxy header a request has, if any."""
    headers = connection.headers
    return next((name for name in PROXY_HEADERS if name in headers), None)


def same_origin(connection: HTTPConnection) -> bool:
    """Whether a websocket comes from a page of the server it connects to, or
    from no page at all (not a browser). Browsers let any page open a
    websocket to any server, with the user's cookies."""
    origin = connection.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == connection.headers.get("host", "").lower()


def fetched_by_own_page(connection: HTTPConnection) -> bool:
    """Whether a browser says the request came from a page of the same
    origin, or from no page (``Sec-Fetch-Site``; other clients do not say).
    Another site's page may make a request without an ``Origin`` (an
    image, say): this keeps it off the live views."""
    site = connection.headers.get("sec-fetch-site")
    return site is None or site in ("same-origin", "none")
