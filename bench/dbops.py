"""MongoDB round trips and server time per image, from the server's own counters (``top``).

``top`` (admin database) reports, per namespace and per operation (``queries``, ``getmore``,
``insert``, ``update``, ``remove``, ``commands``), a count and the microseconds the server spent.
Read before and after a batch, the difference divided by its images is what one image costs
the database, by collection and operation, whoever asked (workers, API, beat, the bench's own
progress reads: those are listed too, and small).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient

_SECTIONS = ("queries", "getmore", "insert", "update", "remove", "commands")


@dataclass
class DbOps:
    images: int
    # (collection, operation) -> (round trips per image, server ms per image)
    per_image: dict[tuple[str, str], tuple[float, float]]

    @property
    def round_trips(self) -> float:
        return sum(count for count, _ in self.per_image.values())

    @property
    def server_ms(self) -> float:
        return sum(ms for _, ms in self.per_image.values())


def snapshot(mongodb_url: str, database: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(collection, operation) -> (count, microseconds), for ``database``'s collections."""
    with MongoClient(mongodb_url) as client:
        totals: dict[str, Any] = client.admin.command("top")["totals"]
    found = {}
    for namespace, sections in totals.items():
        db, _, collection = namespace.partition(".")
        if db != database or not isinstance(sections, dict):
            continue
        for section in _SECTIONS:
            entry = sections.get(section) or {}
            found[(collection, section)] = (int(entry.get("count", 0)), int(entry.get("time", 0)))
    return found


def delta(
    before: dict[tuple[str, str], tuple[int, int]],
    after: dict[tuple[str, str], tuple[int, int]],
    images: int,
) -> DbOps:
    per_image = {}
    for key, (count, micros) in after.items():
        count0, micros0 = before.get(key, (0, 0))
        if count > count0:
            per_image[key] = ((count - count0) / images, (micros - micros0) / 1000 / images)
    return DbOps(images, dict(sorted(per_image.items(), key=lambda kv: -kv[1][0])))
