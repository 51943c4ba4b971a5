"""Access tokens the emulated Entra ID issues and the emulated resource providers accept.

Tokens are real RS256 JWTs signed with the emulator's own key, shaped like Entra's v1 app tokens (aud, iss
https://sts.windows.net/{tenant}/, tid, oid, appid, idtyp), so a client that decodes them sees what it would see
against Azure.
"""

from __future__ import annotations

import base64
import datetime
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class TokenError(Exception):
    """An authentication failure; ``response()`` is what the plane that rejected the token returns."""

    def __init__(self, response_factory):
        super().__init__("authentication failed")
        self._factory = response_factory

    def response(self):
        return self._factory()


class TokenIssuer:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        self.issuer = f"https://sts.windows.net/{tenant_id}/"

    def issue(self, *, audience: str, oid: str, appid: str, lifetime: int = 3600, **claims: Any) -> tuple[str, int]:
        now = int(time.time())
        payload = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "tid": self.tenant_id,
            "oid": oid,
            "sub": oid,
            "appid": appid,
            "idtyp": "app",
            "ver": "1.0",
            "uti": uuid.uuid4().hex,
            **claims,
        }
        token = jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})
        return token, lifetime

    def public_jwk(self) -> dict[str, Any]:
        """The signing key as Entra publishes it at /{tenant}/discovery/v2.0/keys."""
        numbers = self._key.public_key().public_numbers()

        def b64(value: int) -> str:
            return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": b64(numbers.n),
            "e": b64(numbers.e),
            "issuer": self.issuer,
        }

    def decode(self, token: str) -> dict[str, Any]:
        """Verify signature and issuer; audience and expiry are checked by the caller, which owns the wording."""
        return jwt.decode(
            token,
            self._key.public_key(),
            algorithms=["RS256"],
            issuer=self.issuer,
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False},
        )


class IssuerKey:
    """An RS256 signing key published the way kube-apiserver publishes its service-account keys (/openid/v1/jwks):
    ``kid`` is the unpadded base64url SHA-256 of the DER public key (keyIDFromPublicKey in k8s.io/kubernetes
    pkg/serviceaccount/jwt.go; docs/lab.md §4), the JWK carries use, kty, kid, alg, n and e.

    The lab's AKS token proxy signs the tokens of the identity-binding issuers with one (token_proxy.py; LAB CHOICE,
    azure-behaviour §10)."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        self.kid = base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def public_jwk(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256", "n": _b64(numbers.n), "e": _b64(numbers.e)}


def _b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
