"""What every domain operation works with: settings, the database, the task sender, the store
and the live-event publisher.

The API builds one at start-up; each task process's :class:`domain.runtime.Runtime` is one.
Operations take it first, so the same code runs behind an endpoint and inside a task.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgbatch.core.settings import Settings
from imgbatch.domain.events import EventPublisher
from imgbatch.domain.taskqueue import TaskSender
from imgbatch.models.db import Database
from imgbatch.models.media import MediaRepository
from imgbatch.models.products import ProductRepository
from imgbatch.models.requests import RequestRepository
from imgbatch.models.slots import SlotRepository
from imgbatch.models.staging import StagedChunkRepository
from imgbatch.models.temp import TempObjectRepository
from imgbatch.storage import MediaStore


@dataclass
class Services:
    settings: Settings
    db: Database
    tasks: TaskSender
    store: MediaStore
    # Live progress notices for event streams (domain.events).
    events: EventPublisher

    @property
    def requests(self) -> RequestRepository:
        return RequestRepository(self.db)

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
