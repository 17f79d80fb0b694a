"""The embedded MongoDB-protocol server runs the way docs/failure-behaviour.md says."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from pymongo import MongoClient

from imgbatch.cli.embedded import EmbeddedMongo

# Every test here starts `imgbatch run`, `imgbatch demo` or an embedded server itself.
pytestmark = pytest.mark.stack


def test_the_embedded_database_fsyncs_every_commit(tmp_path: Path) -> None:
    with EmbeddedMongo(tmp_path) as mongo:
        assert mongo.process is not None
        assert "--sync-on-commit" in psutil.Process(mongo.process.pid).cmdline()
        client: MongoClient[dict[str, object]] = MongoClient(mongo.url)
        try:
            client["probe"]["t"].insert_one({"_id": 1})
            assert client["probe"]["t"].count_documents({}) == 1
        finally:
            client.close()
