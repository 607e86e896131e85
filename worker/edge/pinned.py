"""An httpx transport that connects only to an address it has checked.

The name in a callback URL is resolved here, every address it gives is checked
(producer.callback_policy), and the connection goes to the checked address:
httpx never resolves the name again, so DNS cannot answer differently between
the check and the connect (rebinding). The Host header keeps the name, and for
https the TLS server name (SNI) and the certificate check keep it too.
"""

from __future__ import annotations

from typing import Any

import httpx

from producer import callback_policy
from producer.callback_policy import Resolver


class CallbackRefused(Exception):
    """The callback host is, or now resolves to, an inside address: not retried."""


def pick_address(host: str, allow_private: bool, resolver: Resolver) -> str:
    """The address to connect to for `host`, after the checks; raises when there is none."""
    literal = callback_policy.literal_address(host)
    addresses = [literal] if literal is not None else resolver(host)
    if not addresses:
        raise httpx.ConnectError(f"{host} does not resolve")  # DNS may come back: retried
    if not allow_private:
        refusal = callback_policy.host_refusal(host, lambda _h: addresses)
        if refusal is not None:
            raise CallbackRefused(refusal)
    return str(addresses[0])


class PinnedTransport(httpx.BaseTransport):
    """`httpx.HTTPTransport` (same keyword arguments) that pins each request's address."""

    def __init__(
        self,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        **transport_options: Any,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver or callback_policy.resolve
        self._inner = httpx.HTTPTransport(**transport_options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        address = pick_address(host, self.allow_private, self.resolver)
        if address != host:
            # The Host header was set from the URL when the request was built; it stays.
            request.url = request.url.copy_with(host=address)
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
