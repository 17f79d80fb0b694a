"""JWT bearer tokens beside API keys: a service that already issues JWTs calls the API with them.

One way to verify is configured: a shared secret (HS256) or a PEM public key (RS256 for RSA,
ES256 for P-256). The algorithm follows from that configuration, never from the token's header:
a token saying ``alg: none``, or HS256 signed with the public key's text (the algorithm
confusion attack), names an algorithm not accepted here and is refused. ``exp`` and ``sub`` are
required; ``aud`` and ``iss`` are checked when configured. The ``sub`` is the owner, exactly
as a key's id is: the same tenancy, rate limits and in-flight caps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from imgbatch.core.logs import log_event
from imgbatch.core.settings import Settings

logger = logging.getLogger(__name__)

# Owners are ids in our own documents and log lines: a `sub` must be a short plain string.
MAX_SUBJECT = 200


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated parts. API keys are `ibk_` plus URL-safe base64, which has no dot."""
    return credential.count(".") == 2


@dataclass(frozen=True)
class TokenVerifier:
    key: Any  # the HMAC secret (bytes) or a cryptography public key object
    algorithm: str
    audience: str | None
    issuer: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """None when no JWT setting is configured: then only API keys are accepted."""
        if settings.jwt_secret is not None:
            key: Any = settings.jwt_secret.get_secret_value().encode()
            algorithm = "HS256"
        elif settings.jwt_public_key is not None:
            key = load_pem_public_key(settings.jwt_public_key.get_secret_value().encode())
            algorithm = _algorithm_of(key)
        else:
            return None
        return cls(key, algorithm, settings.jwt_audience, settings.jwt_issuer)

    def owner(self, token: str) -> str | None:
        """The token's ``sub`` if it is valid now; None (and why, in the log) if it is not."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as refused:
            # The reason only (expired, audience, signature...): never the token or the key.
            log_event(logger, "auth.token_refused", reason=type(refused).__name__)
            return None
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT:
            log_event(logger, "auth.token_refused", reason="InvalidSubject")
            return None
        return subject


def _algorithm_of(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("IMGBATCH_JWT_PUBLIC_KEY must be an RSA or a P-256 (ES256) public key")
