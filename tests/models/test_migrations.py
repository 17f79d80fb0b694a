"""The schema comes from the repositories' declarations, and a numbered migration runs once."""

from __future__ import annotations

from pymongo import ASCENDING, IndexModel

from imgbatch.models.migrations import MIGRATIONS_IN_ORDER, REPOSITORIES, migrate
from imgbatch.worker.runtime import WorkerRuntime


def _index_keys(rt: WorkerRuntime, collection: str) -> list[list[tuple[str, int]]]:
    info = rt.run(rt.db[collection].index_information())
    return [
        [(field, int(direction)) for field, direction in index["key"]] for index in info.values()
    ]


def test_every_declared_index_exists_after_migrating(isolated: WorkerRuntime) -> None:
    rt = isolated
    rt.run(migrate(rt.db))
    for repository in REPOSITORIES:
        present = _index_keys(rt, repository.COLLECTION)
        for index in repository.INDEXES:
            wanted = [(field, int(direction)) for field, direction in index.document["key"].items()]
            assert wanted in present, (repository.__name__, wanted)


def test_a_migration_is_applied_once_and_recorded(isolated: WorkerRuntime) -> None:
    rt = isolated
    products = rt.db["products"]
    # A database from before migration 1: products carried a TTL index of their own.
    rt.run(products.create_indexes([IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]))
    rt.run(migrate(rt.db))
    assert "expires_at_1" not in rt.run(products.index_information())
    recorded = rt.run(rt.db["migrations"].find({}).sort("_id", 1).to_list())
    assert [doc["_id"] for doc in recorded] == [m.number for m in MIGRATIONS_IN_ORDER]
    assert recorded[0]["name"] == MIGRATIONS_IN_ORDER[0].name

    # Recorded, so not run again: an index made after it (by hand here) is left alone.
    rt.run(products.create_indexes([IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]))
    rt.run(migrate(rt.db))
    assert "expires_at_1" in rt.run(products.index_information())
    assert rt.run(rt.db["migrations"].count_documents({})) == len(MIGRATIONS_IN_ORDER)


def test_migrations_are_numbered_in_order() -> None:
    numbers = [m.number for m in MIGRATIONS_IN_ORDER]
    assert numbers == list(range(1, len(numbers) + 1))
