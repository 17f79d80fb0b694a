"""The address guard: where imgbatch may connect. Downloads, webhooks and uploads share it.

Every URL a user writes into a spreadsheet is fetched by a worker that sits inside our network,
so "download this" is "make our server connect wherever the spreadsheet says". This module is
the one place that decides where that may be. Image downloads, webhook deliveries and the
upload-time checks all use it, so it sits below all three.

Three layers, each useful on its own:

* :func:`literal_host_reason`: the upload-time check. No DNS, so it can only refuse URLs whose
  host *is* an address (in any encoding) or a loopback name, which is enough to reject the
  obvious attacks while the user is still looking at the upload form.
* :func:`check_url`: the per-hop check a redirect-following caller runs before each request:
  scheme, port, and literal addresses. Also no DNS.
* :func:`guarded_client`: the enforcement. Its transport resolves each host **once**, checks
  **every** answer with :func:`blocked_reason`, connects to one of the checked addresses (so a
  DNS record that changes between check and connect changes nothing), and lets httpcore start
  TLS with the URL's hostname, so SNI, certificate verification and ``Host`` stay correct. It
  never follows redirects; callers follow them by hand so each hop goes through it again.

Why the transport is ``ssrfguard`` and not ours
-----------------------------------------------
We evaluated ``ssrfguard`` 0.4.1 (``ssrfguard.httpx.AsyncSafeTransport``) against writing an
``httpcore.AsyncNetworkBackend`` ourselves, and kept ssrfguard because the tests in
``tests/worker/test_network.py`` pass with it (once given our table, below) and its design is
what we would have written, with fewer places to get it wrong:

* It pins at httpcore's network-backend seam: ``connect_tcp`` resolves once (in a worker thread,
  with its own limiter, so a stalled ``getaddrinfo`` cannot freeze the event loop), checks every
  answer, refuses a name that resolves to both permitted and denied addresses (the rebinding
  signature), connects by IP and re-checks the peer address of the connected socket. TLS is then
  started by httpcore's own stream code with the origin hostname: there is no ``server_hostname``
  line anywhere for us to get wrong. ``test_https_keeps_sni_and_host_through_the_pin`` proves SNI,
  certificate verification against the name and ``Host`` through a real TLS loopback server.
* Probed before deciding: its URL check refuses ``127.0.0.1``, ``2130706433``, ``127.1``,
  ``[::ffff:127.0.0.1]`` and ``[64:ff9b::7f00:1]`` before any socket exists, and spellings it
  takes for names (``0x7f000001``, ``0x7f.1``, ``localhost``) resolve to 127.0.0.1 and are refused
  at the address check. The listener tests in ``test_network.py`` assert zero connections for
  each spelling, and the resolver-injection tests show one lookup per request and the
  connection landing on the checked address.
* Writing our own meant re-implementing a backend, the failover across answers and peer
  verification, i.e. the same code plus a hand-written TLS path: more risk, no gain.

What the tests showed it gets wrong, and how that is handled here: its default address table
**permits** ``::ffff:0:7f00:1`` (the SIIT "IPv4-translated" form of 127.0.0.1) and anything else
outside IPv6 global unicast that IANA's special-purpose registry happens not to list. So the
transport is not given ssrfguard's table but :data:`ADDRESS_TABLE`, which is ssrfguard's IANA
transcription plus our explicit additions below; :func:`blocked_reason` answers from the same
table, so the upload-time check and the connect-time check cannot disagree. Our transport also
runs :func:`literal_host_reason` before ssrfguard, so encoded spellings and ``localhost.`` are
refused identically whatever the platform resolver makes of them (``localhost.`` does not even
resolve in some containers, which would surface as a connect error rather than a refusal), and
without sending a DNS query. ssrfguard's exceptions are translated into our single
:class:`BlockedAddress` at the transport boundary, so callers never import ssrfguard.

Known limit (not ours to fix here): name resolution uses the platform ``getaddrinfo``, which has
no timeout. The caller's deadline (``asyncio.timeout``) still fires on time; the resolver thread
is simply left to finish in the background.
"""

from imgbatch.netguard.addresses import ADDRESS_TABLE, blocked_reason, literal_host_reason
from imgbatch.netguard.client import guarded_client
from imgbatch.netguard.policy import BlockedAddress, InvalidTarget, NetworkPolicy, check_url
from imgbatch.netguard.responses import retry_after_seconds

__all__ = [
    "ADDRESS_TABLE",
    "BlockedAddress",
    "InvalidTarget",
    "NetworkPolicy",
    "blocked_reason",
    "check_url",
    "guarded_client",
    "literal_host_reason",
    "retry_after_seconds",
]
