"""Standard Webhooks signing: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.

The HMAC is computed by the ``standardwebhooks`` package, the same code a receiver verifies
with, so our output cannot drift from the spec's test vectors. Several secrets give several
space-separated ``v1,`` signatures (the spec's way to rotate a secret without downtime).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# 24 random bytes, as Svix issues them: well above what HMAC-SHA256 needs.
_SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def signed_headers(
    event_id: str, body: str, keys: Sequence[str], *, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at sending ``body``.

    The timestamp is the attempt's, not the event's: receivers reject signatures older than a
    few minutes, and a retry hours later must still pass.
    """
    if not keys:
        raise ValueError("at least one signing secret is needed")
    # Whole seconds: the header carries whole seconds and the signed string must match it.
    timestamp = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    signatures = " ".join(Webhook(key).sign(event_id, timestamp, body) for key in keys)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }
