"""The modes mitmproxy runs in, and whether a listen address reaches beyond this machine: what
the addons that care about where the proxy listens (HarmonyFilter, Endpoints, Loopback) share."""

import ipaddress

from mitmproxy import ctx
from mitmproxy.proxy.mode_specs import ProxyMode

FORWARD_PROXY_MODES = ("regular", "upstream", "socks5")
"""Modes in which the proxy relays traffic to any host a client names."""


def proxy_modes() -> list[ProxyMode]:
    """The modes mitmproxy runs in (a spec it cannot parse is left out: it rejects that itself)."""
    modes = []
    for spec in ctx.options.mode:
        try:
            modes.append(ProxyMode.parse(spec))
        except ValueError:
            pass
    return modes


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches; "" (every interface) is not one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
