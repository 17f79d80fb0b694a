"""Where a webhook may be sent: checked when the URL is given, and again by every attempt.

The check here is the address guard's no-DNS part (scheme, port, literal and loopback hosts), so
an obviously internal URL is refused while the user is still looking at the form. Hostnames are
judged after resolution, at delivery time, by the same guarded client image downloads use.
"""

from __future__ import annotations

from imgbatch.core.errors import UnprocessableEntity
from imgbatch.core.settings import Settings
from imgbatch.netguard import BlockedAddress, InvalidTarget, NetworkPolicy, check_url


class InvalidWebhookURL(UnprocessableEntity):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__({"message": f"{field} is not an allowed webhook URL", "reason": reason})


def validate_webhook_url(url: str, settings: Settings, *, field: str = "url") -> str:
    """The URL, stripped; raises :class:`InvalidWebhookURL` (422) if it may not be used."""
    url = url.strip()
    if len(url) > settings.max_url_length:
        raise InvalidWebhookURL(field, f"longer than {settings.max_url_length} characters")
    try:
        check_url(url, NetworkPolicy.from_settings(settings))
    except (InvalidTarget, BlockedAddress) as refused:
        raise InvalidWebhookURL(field, str(refused)) from None
    return url
