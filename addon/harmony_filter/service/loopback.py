"""Loopback: the proxy carries API keys, so it answers only this machine unless told otherwise."""

import logging

from mitmproxy import ctx

from ..proxy.modes import proxy_modes

LOOPBACK = "127.0.0.1"

logger = logging.getLogger(__name__)


class Loopback:
    """mitmproxy listens on every interface by default (listen_host ""); with the addon it listens
    on 127.0.0.1 instead. An explicit listen_host (`0.0.0.0` for every interface) or a host in the
    mode (`reverse:URL@0.0.0.0:3307`) is kept."""

    async def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        if ctx.options.listen_host or proxyserver is None or not ctx.options.server:
            return
        modes = proxy_modes()
        defaulted = [mode for mode in modes if mode.custom_listen_host is None]
        if not defaulted:
            return
        ctx.options.listen_host = LOOPBACK
        # mitmdump opens its listeners before it loads scripts: reopen the ones on every
        # interface (a listener on port 0 gets a new port, printed again).
        await proxyserver.servers.update([mode for mode in modes if mode not in defaulted])
        await proxyserver.servers.update(modes)
        logger.info(
            "harmony-filter: listening on %s only (set listen_host, e.g. 0.0.0.0, to open up)",
            LOOPBACK,
        )
