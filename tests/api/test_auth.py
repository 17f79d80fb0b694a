"""API keys (created with the real CLI), tenancy, per-key rate limits, idempotent uploads and
the upload size cap, against a second API process with authentication switched on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.database import Database

from imgbatch.cli.stack import Stack
from tests.support.client import sheet, upload
from tests.support.keys import cli, client, new_key
from tests.support.origin import Origin
from tests.support.stacks import side_api
from tests.support.waiting import wait_until

LIMITS = {
    "IMGBATCH_AUTH_DISABLED": "false",
    "IMGBATCH_RATE_LIMIT_UPLOADS": "5",
    "IMGBATCH_RATE_LIMIT_WINDOW_SECONDS": "3600",
    "IMGBATCH_MAX_REQUESTS_IN_FLIGHT": "3",
    "IMGBATCH_MAX_CSV_BYTES": "20000",
    "IMGBATCH_MAX_IMAGE_BYTES": "30000",
}
URL = "https://images.example.com/a.jpg"


@pytest.fixture(scope="module")
def secure_url(stack: Stack) -> Iterator[str]:
    with side_api(stack, "api-secure", LIMITS) as url:
        yield url


def test_requests_without_a_valid_key_get_401(stack: Stack, secure_url: str) -> None:
    with client(secure_url) as anonymous:
        response = upload(anonymous, sheet([(1, "A", URL)]))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["detail"]
        assert anonymous.get("/api/status/whatever").status_code == 401
        for path in ("/api/profiles", "/api/images/whatever", "/api/requests/whatever/results"):
            assert anonymous.get(path).status_code == 401, path
        image = anonymous.post("/api/images", files={"file": ("a.jpg", b"\xff\xd8\xff")})
        assert image.status_code == 401
    with client(secure_url, "ibk_not-a-real-key") as forged:
        assert upload(forged, sheet([(1, "A", URL)])).status_code == 401
    assert client(secure_url).get("/api/health").status_code == 200


def test_keys_are_listed_without_secrets_and_revoked_keys_stop_working(
    stack: Stack, secure_url: str, mongo: Database[dict[str, Any]]
) -> None:
    key_id, key = new_key(stack, "revocable")
    stored = mongo["api_keys"].find_one({"_id": key_id})
    assert stored is not None
    assert key not in str(stored)  # only the hash is kept
    listing = cli(stack, "keys", "list")
    assert key_id in listing
    assert key not in listing
    with client(secure_url, key, header="x-api-key") as caller:
        assert upload(caller, sheet([(1, "A", URL)])).status_code == 202
        assert f"revoked {key_id}" in cli(stack, "keys", "revoke", key_id)
        assert upload(caller, sheet([(1, "A", URL)])).status_code == 401


def test_a_key_revoked_without_notice_is_refused_once_a_second_has_passed(
    stack: Stack, secure_url: str, mongo: Database[dict[str, Any]]
) -> None:
    key_id, key = new_key(stack, "lapsing")
    with client(secure_url, key) as caller:
        assert caller.get("/api/profiles").status_code == 200  # its owner is now remembered
        # Revoked behind the API's back, so no notice reaches it: only the key cache's own
        # expiry (IMGBATCH_KEY_CACHE_SECONDS, 1 s by default) can make it refuse the key.
        mongo["api_keys"].update_one({"_id": key_id}, {"$set": {"revoked_at": datetime.now(UTC)}})
        revoked_at = time.monotonic()
        answers: list[tuple[float, int]] = []

        def a_second_has_passed() -> bool:
            sent = time.monotonic() - revoked_at
            answers.append((sent, caller.get("/api/profiles").status_code))
            return sent >= 1.0

        wait_until(a_second_has_passed, timeout=30, what="a second after the revocation")
    # Whatever was answered meanwhile, a request sent a second after the revocation is refused,
    # and once refused the key is never accepted again.
    assert answers[-1][1] == 401, answers
    codes = [code for _, code in answers]
    assert codes == sorted(codes) and set(codes) <= {200, 401}, answers


def test_revoking_a_key_with_the_cli_reaches_every_api_process_at_once(
    stack: Stack, mongo: Database[dict[str, Any]]
) -> None:
    # Two API processes that remember keys for an hour: a refusal within seconds, on both, can
    # only be the notice the CLI sent through Redis.
    env = {"IMGBATCH_AUTH_DISABLED": "false", "IMGBATCH_KEY_CACHE_SECONDS": "3600"}
    with (
        side_api(stack, "api-remembering-a", env) as url_a,
        side_api(stack, "api-remembering-b", env) as url_b,
    ):
        quiet_id, quiet_key = new_key(stack, "revoked-quietly")
        loud_id, loud_key = new_key(stack, "revoked-with-the-cli")
        callers = [client(url, key) for url in (url_a, url_b) for key in (quiet_key, loud_key)]
        quiet_a, loud_a, quiet_b, loud_b = callers
        try:
            for caller in callers:
                assert caller.get("/api/profiles").status_code == 200
            # Revoked behind the APIs' backs: still accepted by both, from memory.
            mongo["api_keys"].update_one(
                {"_id": quiet_id}, {"$set": {"revoked_at": datetime.now(UTC)}}
            )
            assert quiet_a.get("/api/profiles").status_code == 200
            assert quiet_b.get("/api/profiles").status_code == 200
            assert f"revoked {loud_id}" in cli(stack, "keys", "revoke", loud_id)
            wait_until(
                lambda: (
                    [c.get("/api/profiles").status_code for c in (loud_a, loud_b)] == [401, 401]
                ),
                timeout=10,
                what="the key revoked with the CLI to be refused by both API processes",
            )
            # The notice makes each process forget every key it remembered, so the quietly
            # revoked one is refused by both now as well.
            assert quiet_a.get("/api/profiles").status_code == 401
            assert quiet_b.get("/api/profiles").status_code == 401
        finally:
            for caller in callers:
                caller.close()


def test_another_keys_delete_is_404_and_deletes_nothing(
    stack: Stack, secure_url: str, origin: Origin
) -> None:
    _, alice_key = new_key(stack, "alice-deletes")
    _, bob_key = new_key(stack, "bob-deletes")
    with client(secure_url, alice_key) as alice, client(secure_url, bob_key) as bob:
        created = upload(alice, sheet([(1, "A", origin.url("/img/rocket.jpg"))]))
        assert created.status_code == 202
        request_id = created.json()["request_id"]
        refused = bob.delete(f"/api/requests/{request_id}")
        assert refused.status_code == 404
        assert refused.json() == {"detail": f"request {request_id} not found"}
        assert alice.get(f"/api/status/{request_id}").status_code == 200
        with client(secure_url) as anonymous:
            assert anonymous.delete(f"/api/requests/{request_id}").status_code == 401
        assert alice.delete(f"/api/requests/{request_id}").status_code == 204
        assert alice.get(f"/api/status/{request_id}").status_code == 404


def test_another_keys_requests_do_not_exist(stack: Stack, secure_url: str, origin: Origin) -> None:
    _, alice_key = new_key(stack, "alice")
    _, bob_key = new_key(stack, "bob")
    with client(secure_url, alice_key) as alice, client(secure_url, bob_key) as bob:
        created = upload(alice, sheet([(1, "A", origin.url("/img/rocket.jpg"))]))
        assert created.status_code == 202
        request_id = created.json()["request_id"]
        assert alice.get(f"/api/status/{request_id}").status_code == 200
        for path in (f"/api/status/{request_id}", f"/api/download/{request_id}"):
            hidden = bob.get(path)
            assert hidden.status_code == 404
            assert hidden.json() == {"detail": f"request {request_id} not found"}


def test_uploads_are_rate_limited_per_key_with_headers(stack: Stack, secure_url: str) -> None:
    _, key = new_key(stack, "limited")
    _, other = new_key(stack, "unaffected")
    with client(secure_url, key) as caller:
        remaining = []
        for serial in range(5):
            # Bad sheets count too, and their 422 carries the headers.
            response = upload(caller, sheet([(serial + 1, "", URL)]))
            assert response.status_code == 422
            assert response.headers["x-ratelimit-limit"] == "5"
            assert 0 < int(response.headers["x-ratelimit-reset"]) <= 3600
            remaining.append(response.headers["x-ratelimit-remaining"])
        assert remaining == ["4", "3", "2", "1", "0"]
        refused = upload(caller, sheet([(1, "A", URL)]))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert "rate limit" in refused.json()["detail"]
    with client(secure_url, other) as unaffected:
        assert upload(unaffected, sheet([(1, "A", URL)])).status_code == 202


def test_requests_in_flight_are_capped_per_key(
    stack: Stack, secure_url: str, origin: Origin
) -> None:
    _, key = new_key(stack, "busy")
    slow = origin.url("/slow/chelsea.jpg?delay=4")
    with client(secure_url, key) as caller:
        for serial in (1, 2, 3):
            assert upload(caller, sheet([(serial, "Slow", slow)])).status_code == 202
        refused = upload(caller, sheet([(4, "Slow", slow)]))
        assert refused.status_code == 429
        assert "in progress" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "30"


def test_concurrent_uploads_cannot_pass_the_in_flight_cap_together(
    stack: Stack, secure_url: str, origin: Origin
) -> None:
    _, key = new_key(stack, "eager")
    slow = origin.url("/slow/chelsea.jpg?delay=5")

    def attempt(serial: int) -> int:
        with client(secure_url, key) as caller:
            return upload(caller, sheet([(serial, "Slow", slow)])).status_code

    # Far fewer than the rate limit (5 per window), all at once, against a cap of 3 in flight.
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = sorted(pool.map(attempt, range(1, 6)))
    assert answers == [202, 202, 202, 429, 429]


def test_idempotency_key_replays_the_first_upload(
    stack: Stack, secure_url: str, mongo: Database[dict[str, Any]]
) -> None:
    _, key = new_key(stack, "idempotent")
    body = sheet([(1, "A", URL), (2, "B", URL)])
    with client(secure_url, key) as caller:
        first = upload(caller, body, headers={"Idempotency-Key": "sheet-42"})
        again = upload(caller, body, headers={"Idempotency-Key": "sheet-42"})
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert mongo["requests"].count_documents({"_id": first.json()["request_id"]}) == 1

        other_file = upload(caller, sheet([(1, "A", URL)]), headers={"Idempotency-Key": "sheet-42"})
        assert other_file.status_code == 422
        assert "different upload" in other_file.json()["detail"]

        # A day later the key is free again.
        mongo["idempotency_keys"].update_many(
            {"_id": {"$regex": ":sheet-42$"}},
            {"$set": {"expires_at": datetime.now(UTC) - timedelta(hours=1)}},
        )
        reused = upload(caller, sheet([(1, "A", URL)]), headers={"Idempotency-Key": "sheet-42"})
        assert reused.status_code == 202
        assert reused.json()["request_id"] != first.json()["request_id"]


def test_a_replay_counts_against_neither_the_rate_limit_nor_the_in_flight_cap(
    stack: Stack, secure_url: str, origin: Origin
) -> None:
    _, key = new_key(stack, "replaying")
    slow = origin.url("/slow/chelsea.jpg?delay=5")
    with client(secure_url, key) as caller:
        first = upload(caller, sheet([(1, "Slow", slow)]), headers={"Idempotency-Key": "once"})
        assert first.status_code == 202
        for serial in (2, 3):  # the cap of 3 in flight is now reached
            assert upload(caller, sheet([(serial, "Slow", slow)])).status_code == 202
        for _ in range(4):  # more replays than the rate limit (5) has left
            again = upload(caller, sheet([(1, "Slow", slow)]), headers={"Idempotency-Key": "once"})
            assert again.status_code == 202, again.text
            assert again.json() == first.json()
            assert again.headers["x-ratelimit-remaining"] == "2"


def test_the_idempotency_fingerprint_covers_every_form_field(stack: Stack, secure_url: str) -> None:
    _, key = new_key(stack, "fields")
    body = sheet([(1, "A", URL)])
    headers = {"Idempotency-Key": "form"}
    hook = {"webhook_url": "https://hooks.example.com/a"}
    with client(secure_url, key) as caller:
        assert upload(caller, body, headers=headers, data=hook).status_code == 202
        for changed in (
            {"webhook_url": "https://hooks.example.com/b"},
            {**hook, "priority": "high"},
            {},
        ):
            refused = upload(caller, body, headers=headers, data=changed)
            assert refused.status_code == 422, changed
            assert "different upload" in refused.json()["detail"]
        assert upload(caller, body, headers=headers, data=hook).status_code == 202


def test_a_key_reserved_by_an_upload_that_died_is_taken_over(
    stack: Stack, secure_url: str, mongo: Database[dict[str, Any]]
) -> None:
    owner, key = new_key(stack, "crashed")
    body = sheet([(1, "A", URL)])
    headers = {"Idempotency-Key": "orphan"}
    with client(secure_url, key) as caller:
        # The API process died after reserving the key and before storing the answer.
        mongo["idempotency_keys"].insert_one(
            {
                "_id": f"{owner}:orphan",
                "fingerprint": "whatever the dead upload was",
                "created_at": datetime.now(UTC) - timedelta(minutes=10),
                "expires_at": datetime.now(UTC) + timedelta(hours=23),
                "lease_until": datetime.now(UTC) - timedelta(minutes=5),
                "response": None,
            }
        )
        taken_over = upload(caller, body, headers=headers)
        assert taken_over.status_code == 202, taken_over.text
        replayed = upload(caller, body, headers=headers)
        assert replayed.json() == taken_over.json()


def test_a_failed_upload_does_not_burn_its_idempotency_key(stack: Stack, secure_url: str) -> None:
    _, key = new_key(stack, "retrying")
    with client(secure_url, key) as caller:
        bad = upload(caller, sheet([(1, "", URL)]), headers={"Idempotency-Key": "k1"})
        assert bad.status_code == 422
        fixed = upload(caller, sheet([(1, "A", URL)]), headers={"Idempotency-Key": "k1"})
        assert fixed.status_code == 202


def test_oversized_uploads_get_413_before_the_body_is_read(stack: Stack, secure_url: str) -> None:
    _, key = new_key(stack, "big")
    big = sheet([(i, f"P{i}", URL) for i in range(1, 2000)])
    assert len(big) > 20000 + 64 * 1024
    with client(secure_url, key) as caller:
        declared = upload(caller, big)
        assert declared.status_code == 413
        assert "larger than the limit" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            boundary = b"--imgbatch\r\n"
            yield (
                boundary + b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
            )
            for _ in range(200):
                yield big.encode()[:1024]
            yield b"\r\n--imgbatch--\r\n"

        streamed = caller.post(
            "/api/upload",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=imgbatch"},
        )
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413

        # POST /api/images has the same guard with the image cap (MAX_IMAGE_BYTES), not the
        # sheet's: refused on its Content-Length, the route never reads it.
        image = caller.post(
            "/api/images", files={"file": ("a.jpg", b"\xff\xd8\xff" + bytes(30000 + 70 * 1024))}
        )
        assert image.status_code == 413
        assert "larger than the limit of 30000 bytes" in image.json()["detail"]
