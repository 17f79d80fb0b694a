"""What every domain operation works with: settings, the database (and through it every
repository), the task sender, the store and the live-event publisher.

The API builds one at start-up; each task process's :class:`domain.runtime.Runtime` is one.
Operations take it first, so the same code runs behind an endpoint and inside a task.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgbatch.core.settings import Settings
from imgbatch.domain.events import EventPublisher
from imgbatch.domain.taskqueue import TaskSender
from imgbatch.models.db import Database
from imgbatch.models.repositories import Repositories
from imgbatch.storage import MediaStore


@dataclass
class Services(Repositories):
    settings: Settings
    db: Database
    tasks: TaskSender
    store: MediaStore
    # Live progress notices for event streams (domain.events).
    events: EventPublisher
