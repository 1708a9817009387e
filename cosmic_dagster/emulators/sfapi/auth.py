"""The SFAPI emulator's OAuth side: RFC 7523 private-key JWT client authentication and bearer tokens.

sfapi-client (through authlib) proves it holds the client's private key by posting a JWT signed
with it; the emulator checks that signature with the registered public key and the claims NERSC's
token endpoint would check, then hands out short-lived opaque bearer tokens. Nothing secret is ever
put into an error message: errors name the failed check only.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Accepted difference between our clock and the client's for ``iat``.
CLOCK_SKEW_S = 60


class TokenRequestError(Exception):
    """An OAuth error answer (RFC 6749 section 5.2): ``error`` code and a human description."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """The client's registered RSA public key (PEM); a clear error for anything else."""
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise ValueError("the client public key is not a PEM-encoded public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the client public key must be an RSA key (the assertion is signed with RS256)")
    return key


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_client_assertion(
    assertion: str, *, client_id: str, public_key: rsa.RSAPublicKey, audience: str, now: float
) -> dict:
    """The claims of a valid RS256 client assertion, else TokenRequestError naming the failed check."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise TokenRequestError("invalid_client", "client_assertion is not a compact JWT")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise TokenRequestError("invalid_client", "client_assertion is not valid base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRequestError("invalid_client", "client_assertion header and claims must be JSON objects")
    if header.get("alg") != "RS256":
        raise TokenRequestError("invalid_client", f"unsupported assertion algorithm {header.get('alg')!r}")
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise TokenRequestError("invalid_client", "client_assertion signature does not verify") from None
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise TokenRequestError("invalid_client", "client_assertion iss/sub is not the registered client id")
    aud = claims.get("aud")
    if audience not in (aud if isinstance(aud, list) else [aud]):
        raise TokenRequestError("invalid_client", f"client_assertion aud must be {audience}")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or exp <= now:
        raise TokenRequestError("invalid_client", "client_assertion has expired (exp)")
    if isinstance(iat, (int, float)) and iat > now + CLOCK_SKEW_S:
        raise TokenRequestError("invalid_client", "client_assertion is issued in the future (iat)")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise TokenRequestError("invalid_client", "client_assertion has no jti")
    return claims


@dataclass
class _Token:
    expires_at: float


class TokenIssuer:
    """Issues and checks bearer tokens for one registered client; assertions cannot be replayed."""

    def __init__(self, client_id: str, public_key: rsa.RSAPublicKey, audience: str, ttl_s: float = 600):
        self.client_id = client_id
        self.public_key = public_key
        self.audience = audience
        self.ttl_s = ttl_s
        self.issued = 0
        self._tokens: dict[str, _Token] = {}
        self._seen_jti: dict[str, float] = {}
        self._lock = threading.Lock()

    def token_response(self, form: dict[str, str]) -> dict:
        """Answer a token request (form fields) with a bearer token, or raise TokenRequestError."""
        if form.get("grant_type") != "client_credentials":
            raise TokenRequestError(
                "unsupported_grant_type", "only grant_type=client_credentials is supported"
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            raise TokenRequestError("invalid_client", f"client_assertion_type must be {JWT_BEARER}", 401)
        now = time.time()
        try:
            claims = verify_client_assertion(
                form.get("client_assertion", ""),
                client_id=self.client_id,
                public_key=self.public_key,
                audience=self.audience,
                now=now,
            )
        except TokenRequestError as exc:
            exc.status = 401
            raise
        with self._lock:
            self._seen_jti = {jti: exp for jti, exp in self._seen_jti.items() if exp > now}
            if claims["jti"] in self._seen_jti:
                raise TokenRequestError("invalid_client", "client_assertion jti was already used", 401)
            self._seen_jti[claims["jti"]] = float(claims["exp"])
            self._tokens = {t: v for t, v in self._tokens.items() if v.expires_at > now}
            token = secrets.token_urlsafe(32)
            self._tokens[token] = _Token(now + self.ttl_s)
            self.issued += 1
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.ttl_s)}

    def valid(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries a live token of ours."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            token = self._tokens.get(authorization.removeprefix("Bearer ").strip())
            return token is not None and token.expires_at > time.time()

    def revoke_all(self) -> None:
        """Invalidate every token now (what a client sees when its token expires early)."""
        with self._lock:
            self._tokens.clear()
