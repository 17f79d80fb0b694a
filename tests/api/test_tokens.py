"""JWT bearer tokens beside API keys, against API processes configured for them: tokens are
signed by PyJWT here, as an identity provider would sign them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from imgbatch.cli.stack import Stack
from tests.support.client import sheet, upload, wait_for_status
from tests.support.keys import client, new_key
from tests.support.origin import Origin
from tests.support.stacks import side_api

SECRET = "a-shared-secret-of-the-identity-provider-" + uuid.uuid4().hex
AUDIENCE = "imgbatch-api"
ISSUER = "https://idp.example.com/"
AUTH = {
    "IMGBATCH_AUTH_DISABLED": "false",
    "IMGBATCH_JWT_AUDIENCE": AUDIENCE,
    "IMGBATCH_JWT_ISSUER": ISSUER,
    "IMGBATCH_RATE_LIMIT_UPLOADS": "3",
    "IMGBATCH_RATE_LIMIT_WINDOW_SECONDS": "3600",
}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
URL = "https://images.example.com/a.jpg"


def claims(subject: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": subject,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": int(time.time()),
        "exp": int(time.time()) + 300,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


@pytest.fixture(scope="module")
def hs256_api(stack: Stack) -> Iterator[str]:
    with side_api(stack, "api-jwt-hs256", {**AUTH, "IMGBATCH_JWT_SECRET": SECRET}) as url:
        yield url


@pytest.fixture(scope="module")
def rs256_api(stack: Stack) -> Iterator[str]:
    with side_api(
        stack, "api-jwt-rs256", {**AUTH, "IMGBATCH_JWT_PUBLIC_KEY": RSA_PUBLIC_PEM}
    ) as url:
        yield url


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_by_hand(payload: dict[str, Any], key: bytes) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _status(url: str, token: str) -> int:
    with client(url, token) as caller:
        return caller.get("/api/profiles").status_code


def test_a_valid_token_works_end_to_end_with_its_subject_as_the_owner(
    stack: Stack, hs256_api: str, origin: Origin
) -> None:
    subject = f"svc-{uuid.uuid4().hex[:8]}"
    token = jwt.encode(claims(subject), SECRET, algorithm="HS256")
    with client(hs256_api, token) as caller:
        accepted = upload(caller, sheet([(1, "A", origin.url("/img/rocket.jpg"))]))
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["request_id"]
        status = wait_for_status(caller, request_id)
        assert (status["status"], status["images_done"]) == ("completed", 1)
        listed = caller.get("/api/requests").json()["requests"]
        assert [r["request_id"] for r in listed] == [request_id]
    # The same subject in a new token is the same owner; another subject is another tenant.
    again = jwt.encode(claims(subject), SECRET, algorithm="HS256")
    other = jwt.encode(claims(f"other-{uuid.uuid4().hex[:8]}"), SECRET, algorithm="HS256")
    with client(hs256_api, again) as same, client(hs256_api, other) as stranger:
        assert same.get(f"/api/status/{request_id}").status_code == 200
        assert stranger.get(f"/api/status/{request_id}").status_code == 404
        assert stranger.delete(f"/api/requests/{request_id}").status_code == 404
    # API keys keep working on the same API, and a key's owner is not the token's.
    _, key = new_key(stack, "beside-jwt")
    with client(hs256_api, key) as keyed, client(hs256_api, key, header="x-api-key") as other_way:
        assert upload(keyed, sheet([(1, "A", URL)])).status_code == 202
        assert other_way.get("/api/profiles").status_code == 200
        assert keyed.get(f"/api/status/{request_id}").status_code == 404
    log = (stack.data_dir / "logs" / "api-jwt-hs256.log").read_text()
    assert SECRET not in log and token not in log


def test_a_tokens_owner_has_the_rate_limit_of_a_key(hs256_api: str) -> None:
    token = jwt.encode(claims(f"busy-{uuid.uuid4().hex[:8]}"), SECRET, algorithm="HS256")
    with client(hs256_api, token) as caller:
        remaining = [
            upload(caller, sheet([(1, "A", URL)])).headers["x-ratelimit-remaining"]
            for _ in range(3)
        ]
        assert remaining == ["2", "1", "0"]
        refused = upload(caller, sheet([(1, "A", URL)]))
        assert refused.status_code == 429
        assert "rate limit" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("expired", lambda s: jwt.encode(claims(s, exp=int(time.time()) - 60), SECRET, "HS256")),
        ("no exp", lambda s: jwt.encode(claims(s, exp=None), SECRET, "HS256")),
        ("no sub", lambda s: jwt.encode(claims(s, sub=None), SECRET, "HS256")),
        ("wrong audience", lambda s: jwt.encode(claims(s, aud="someone-else"), SECRET, "HS256")),
        ("no audience", lambda s: jwt.encode(claims(s, aud=None), SECRET, "HS256")),
        ("wrong issuer", lambda s: jwt.encode(claims(s, iss="https://evil.example/"), SECRET)),
        ("wrong key", lambda s: jwt.encode(claims(s), SECRET + "x", algorithm="HS256")),
        ("alg none", lambda s: jwt.encode(claims(s), None, algorithm="none")),
        ("HS512", lambda s: jwt.encode(claims(s), SECRET + "-long-enough", algorithm="HS512")),
        ("not a JWT", lambda s: "not.a.jwt"),
    ],
)
def test_tokens_that_do_not_verify_get_401(hs256_api: str, case: str, make: Any) -> None:
    token = make(f"svc-{uuid.uuid4().hex[:8]}")
    with client(hs256_api, token) as caller:
        refused = caller.get("/api/profiles")
        assert refused.status_code == 401, case
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "token is not valid" in refused.json()["detail"]


def test_public_key_tokens_and_algorithm_confusion(rs256_api: str, stack: Stack) -> None:
    subject = f"svc-{uuid.uuid4().hex[:8]}"
    assert _status(rs256_api, jwt.encode(claims(subject), RSA_KEY, algorithm="RS256")) == 200
    # The public key is public: HS256 "signed" with its PEM text must not pass as RS256.
    # (PyJWT itself refuses to sign HMAC with a PEM, so the forger's token is made by hand.)
    forged = _hs256_by_hand(claims(subject), RSA_PUBLIC_PEM.encode())
    assert _status(rs256_api, forged) == 401
    # Another RSA key, an EC key, and alg none are refused too.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _status(rs256_api, jwt.encode(claims(subject), stranger, algorithm="RS256")) == 401
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert _status(rs256_api, jwt.encode(claims(subject), ec_key, algorithm="ES256")) == 401
    assert _status(rs256_api, jwt.encode(claims(subject), None, algorithm="none")) == 401
    # The process never wrote a token or a key to its log.
    log = (stack.data_dir / "logs" / "api-jwt-rs256.log").read_text()
    assert "auth.token_refused" in log
    assert forged not in log and "BEGIN PUBLIC KEY" not in log
