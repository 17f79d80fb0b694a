"""The one way to reach a repository: a property of :class:`Repositories`.

:class:`domain.services.Services` (and so each task process's runtime) is one, and the API's
dependencies hand out its properties; a command with only a database builds one from it. A
repository is cheap to make (it holds a collection handle), so each property makes a new one.
"""

from __future__ import annotations

from imgbatch.models.activity import ActivityRepository, RequestStatsRepository
from imgbatch.models.audit import AuditRepository
from imgbatch.models.db import Database
from imgbatch.models.idempotency import IdempotencyRepository
from imgbatch.models.keys import ApiKeyRepository
from imgbatch.models.media import MediaRepository
from imgbatch.models.products import ProductRepository
from imgbatch.models.requests import RequestRepository
from imgbatch.models.slots import SlotRepository
from imgbatch.models.staging import StagedChunkRepository
from imgbatch.models.temp import TempObjectRepository
from imgbatch.models.webhooks import (
    WebhookDeliveryRepository,
    WebhookEventRepository,
    WebhookSubscriberRepository,
)


class Repositories:
    db: Database

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def requests(self) -> RequestRepository:
        return RequestRepository(self.db)

    @property
    def request_stats(self) -> RequestStatsRepository:
        return RequestStatsRepository(self.db)

    @property
    def audit(self) -> AuditRepository:
        return AuditRepository(self.db)

    @property
    def products(self) -> ProductRepository:
        return ProductRepository(self.db)

    @property
    def chunks(self) -> StagedChunkRepository:
        return StagedChunkRepository(self.db)

    @property
    def media(self) -> MediaRepository:
        return MediaRepository(self.db)

    @property
    def temp_objects(self) -> TempObjectRepository:
        return TempObjectRepository(self.db)

    @property
    def slots(self) -> SlotRepository:
        return SlotRepository(self.db)

    @property
    def activity(self) -> ActivityRepository:
        return ActivityRepository(self.db)

    @property
    def api_keys(self) -> ApiKeyRepository:
        return ApiKeyRepository(self.db)

    @property
    def idempotency(self) -> IdempotencyRepository:
        return IdempotencyRepository(self.db)

    @property
    def subscribers(self) -> WebhookSubscriberRepository:
        return WebhookSubscriberRepository(self.db)

    @property
    def webhook_events(self) -> WebhookEventRepository:
        return WebhookEventRepository(self.db)

    @property
    def deliveries(self) -> WebhookDeliveryRepository:
        return WebhookDeliveryRepository(self.db)
