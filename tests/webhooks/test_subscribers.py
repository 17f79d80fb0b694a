"""Registering webhook subscribers: CRUD, secrets shown once, URL checks, and tenancy.

Tenancy and the address checks run against a second API process on the same stack with API keys
required and private networks refused, as in a deployment."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.database import Database
from standardwebhooks import Webhook

from imgbatch.cli.stack import Stack
from imgbatch.models.db import database, mongo_client
from imgbatch.models.keys import ApiKeyRepository
from imgbatch.models.requests import now
from imgbatch.models.webhooks import DeliveryRecord, EventType, new_id
from tests.support.client import sheet, upload
from tests.support.stacks import side_api

HOOK = "https://hooks.example.com/imgbatch"
STRICT_ENV = {
    "IMGBATCH_AUTH_DISABLED": "false",
    "IMGBATCH_ALLOW_PRIVATE_NETWORKS": "false",
    "IMGBATCH_ALLOWED_PORTS": "[80, 443]",
}


def test_create_shows_the_secret_once_and_list_and_get_never_do(hooks_api: httpx.Client) -> None:
    created = hooks_api.post(
        "/api/webhooks",
        json={"url": HOOK, "events": ["request.completed"], "description": "catalog sync"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= {"id", "url", "events", "secret", "created_at"}
    assert (body["url"], body["events"], body["description"]) == (
        HOOK,
        ["request.completed"],
        "catalog sync",
    )
    secret = body["secret"]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a valid Standard Webhooks secret (base64 key after the prefix)

    listed = hooks_api.get("/api/webhooks")
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == [body["id"]]
    shown = hooks_api.get(f"/api/webhooks/{body['id']}")
    assert shown.status_code == 200
    assert shown.json()["url"] == HOOK
    for response in (listed, shown):
        assert secret not in response.text
        assert "secret" not in response.text.replace("previous_secret_expires_at", "")


def test_delete_removes_and_unknown_ids_are_404(hooks_api: httpx.Client) -> None:
    subscriber = hooks_api.post("/api/webhooks", json={"url": HOOK, "events": ["request.failed"]})
    subscriber_id = subscriber.json()["id"]
    assert hooks_api.delete(f"/api/webhooks/{subscriber_id}").status_code == 204
    for method, path in (
        ("GET", f"/api/webhooks/{subscriber_id}"),
        ("DELETE", f"/api/webhooks/{subscriber_id}"),
        ("POST", f"/api/webhooks/{subscriber_id}/rotate-secret"),
        ("GET", f"/api/webhooks/{subscriber_id}/deliveries"),
        ("POST", "/api/webhooks/deliveries/dlv_unknown/redeliver"),
    ):
        response = hooks_api.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert "not found" in response.json()["detail"]
    assert hooks_api.get("/api/webhooks").json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://hooks.example.com/x", "events": ["request.completed"]},
        {"url": "hooks.example.com/x", "events": ["request.completed"]},
        {"url": HOOK, "events": []},
        {"url": HOOK, "events": ["request.started"]},
        {"events": ["request.completed"]},
    ],
)
def test_invalid_subscribers_are_refused_with_422(
    hooks_api: httpx.Client, body: dict[str, Any]
) -> None:
    response = hooks_api.post("/api/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert hooks_api.get("/api/webhooks").json() == []


def test_a_subscriber_url_with_credentials_is_refused_and_says_why(
    hooks_api: httpx.Client,
) -> None:
    url = "https://user:hunter2@hooks.example.com/imgbatch"
    response = hooks_api.post("/api/webhooks", json={"url": url, "events": ["request.failed"]})
    assert response.status_code == 422, response.text
    assert "user name or password" in response.json()["detail"]["reason"]
    assert "hunter2" not in response.text
    assert hooks_api.get("/api/webhooks").json() == []


def test_rotation_returns_a_new_secret_and_the_overlap(hooks_api: httpx.Client) -> None:
    created = hooks_api.post("/api/webhooks", json={"url": HOOK, "events": ["request.completed"]})
    subscriber = created.json()
    rotated = hooks_api.post(f"/api/webhooks/{subscriber['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != subscriber["secret"]
    expires = datetime.fromisoformat(body["previous_secret_expires_at"])
    overlap = expires - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < overlap <= timedelta(hours=24)
    shown = hooks_api.get(f"/api/webhooks/{subscriber['id']}")
    assert body["secret"] not in shown.text
    assert subscriber["secret"] not in shown.text


# --------------------------------------------------------------------------------------------
# Another API process: keys required, private networks refused
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_url(hooks_stack: Stack) -> Iterator[str]:
    with side_api(hooks_stack, "api-strict", STRICT_ENV) as url:
        yield url


def new_key(stack: Stack, name: str) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        client = mongo_client(stack.settings_for_children())
        try:
            record, key = await ApiKeyRepository(database(client, stack.settings)).create(name)
        finally:
            await client.close()
        return record.id, key

    return asyncio.run(create())


@pytest.fixture
def alice(hooks_stack: Stack, strict_url: str) -> Iterator[tuple[str, httpx.Client]]:
    key_id, key = new_key(hooks_stack, "alice")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=strict_url, headers=headers, timeout=30) as client:
        yield key_id, client


@pytest.fixture
def bob(hooks_stack: Stack, strict_url: str) -> Iterator[httpx.Client]:
    _, key = new_key(hooks_stack, "bob")
    with httpx.Client(base_url=strict_url, headers={"X-API-Key": key}, timeout=30) as client:
        yield client


def test_another_owners_subscriber_does_not_exist(
    alice: tuple[str, httpx.Client],
    bob: httpx.Client,
    strict_url: str,
    hooks_db: Database[dict[str, Any]],
) -> None:
    alice_id, alice_api = alice
    created = alice_api.post("/api/webhooks", json={"url": HOOK, "events": ["request.completed"]})
    assert created.status_code == 201, created.text
    subscriber_id = created.json()["id"]
    # A delivery of Alice's, as the event fan-out would have stored it.
    delivery_id = new_id("dlv")
    stamp = now()
    hooks_db["webhook_deliveries"].insert_one(
        DeliveryRecord(
            id=delivery_id,
            event_id=new_id("msg"),
            event_type=EventType.REQUEST_COMPLETED,
            owner=alice_id,
            request_id="r" * 32,
            target=subscriber_id,
            subscriber_id=subscriber_id,
            url=HOOK,
            state="failed",
            max_attempts=3,
            created_at=stamp,
            updated_at=stamp,
        ).model_dump(by_alias=True)
    )

    for method, path in (
        ("GET", f"/api/webhooks/{subscriber_id}"),
        ("DELETE", f"/api/webhooks/{subscriber_id}"),
        ("POST", f"/api/webhooks/{subscriber_id}/rotate-secret"),
        ("GET", f"/api/webhooks/{subscriber_id}/deliveries"),
        ("POST", f"/api/webhooks/deliveries/{delivery_id}/redeliver"),
    ):
        hidden = bob.request(method, path)
        assert hidden.status_code == 404, (method, path, hidden.text)
    assert bob.get("/api/webhooks").json() == []
    assert [s["id"] for s in alice_api.get("/api/webhooks").json()] == [subscriber_id]
    deliveries = alice_api.get(f"/api/webhooks/{subscriber_id}/deliveries")
    assert [d["id"] for d in deliveries.json()] == [delivery_id]
    assert hooks_db["webhook_deliveries"].find_one({"_id": delivery_id})["state"] == "failed"

    with httpx.Client(base_url=strict_url, timeout=30) as anonymous:
        assert anonymous.get("/api/webhooks").status_code == 401
        assert anonymous.post("/api/webhooks", json={"url": HOOK}).status_code == 401


def test_a_key_has_at_most_twenty_subscribers(alice: tuple[str, httpx.Client]) -> None:
    _, api = alice
    body = {"url": HOOK, "events": ["request.completed"]}
    created = [api.post("/api/webhooks", json=body) for _ in range(20)]
    assert [r.status_code for r in created] == [201] * 20
    refused = api.post("/api/webhooks", json=body)
    assert refused.status_code == 409
    assert "20" in refused.json()["detail"]
    assert len(api.get("/api/webhooks").json()) == 20
    assert api.delete(f"/api/webhooks/{created[0].json()['id']}").status_code == 204
    assert api.post("/api/webhooks", json=body).status_code == 201


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://2130706433/hook",
        "https://hooks.example.com:8443/hook",  # outside allowed_ports
    ],
)
def test_internal_webhook_urls_are_refused_at_registration_and_upload(
    alice: tuple[str, httpx.Client], url: str
) -> None:
    _, api = alice
    registered = api.post("/api/webhooks", json={"url": url, "events": ["request.completed"]})
    assert registered.status_code == 422, registered.text
    detail = registered.json()["detail"]
    assert detail["message"] == "url is not an allowed webhook URL"
    assert detail["reason"]
    assert api.get("/api/webhooks").json() == []

    uploaded = upload(
        api, sheet([(1, "A", "https://images.example.com/a.jpg")]), data={"webhook_url": url}
    )
    assert uploaded.status_code == 422, uploaded.text
    assert uploaded.json()["detail"]["message"] == "webhook_url is not an allowed webhook URL"


def test_a_public_webhook_url_is_accepted_and_gets_its_own_secret(
    alice: tuple[str, httpx.Client],
) -> None:
    _, api = alice
    first = upload(
        api, sheet([(1, "A", "https://images.example.com/a.jpg")]), data={"webhook_url": HOOK}
    )
    second = upload(
        api, sheet([(1, "A", "https://images.example.com/b.jpg")]), data={"webhook_url": HOOK}
    )
    plain = upload(api, sheet([(1, "A", "https://images.example.com/c.jpg")]))
    assert (first.status_code, second.status_code, plain.status_code) == (202, 202, 202)
    secrets = [first.json()["webhook_secret"], second.json()["webhook_secret"]]
    assert all(s.startswith("whsec_") for s in secrets)
    assert secrets[0] != secrets[1]
    assert plain.json()["webhook_secret"] is None
    status = api.get(f"/api/status/{first.json()['request_id']}")
    assert status.status_code == 200
    assert status.json()["webhook"]["url"] == HOOK
    assert secrets[0] not in status.text
    assert api.get(f"/api/status/{plain.json()['request_id']}").json()["webhook"] is None
