"""Who is calling: an OAuth 2.1 resource server (JWT access tokens checked against the authorization server's
JWKS) and hashed static API keys, both behind the SDK's ``TokenVerifier`` protocol.

A JWT is accepted only when its signature verifies with a key from the JWKS under an asymmetric algorithm
(``none`` and HMAC are refused before any key is looked at), its ``iss`` is the configured issuer, its ``aud``
names this server's resource URL (RFC 8707), and it has not expired. A refused token gets the same 401 as a
missing one; the reason goes to the server log only. No crypto is written here: PyJWT does it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import anyio
import jwt
from mcp.server.auth.provider import AccessToken

from sms_mcp.config import ConfigError

log = logging.getLogger("sms_mcp.http.auth")

SCOPE_READ = "sms.read"
SCOPE_SEND = "sms.send"
SCOPES = (SCOPE_READ, SCOPE_SEND)
#: Asymmetric JWS algorithms only: a symmetric key would have to be shared with every resource server, and
#: ``none`` is no signature at all (RFC 8725 §3.1-3.2).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
API_KEY_PREFIX = "smsk_"
API_KEY_ISSUER = "sms-mcp:api-key"


def hash_api_key(key: str) -> str:
    """SHA-256 of a key, hex. Keys are 256-bit random strings, so a fast hash is enough (no dictionary to try)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKeyEntry:
    """One ``SMS_MCP_API_KEYS`` entry: ``name:scope+scope:sha256hex``."""

    name: str
    scopes: tuple[str, ...]
    digest: str

    @classmethod
    def parse(cls, entry: str) -> ApiKeyEntry:
        parts = entry.split(":")
        if len(parts) != 3:
            raise ConfigError(f"SMS_MCP_API_KEYS entry {entry[:20]!r}…: expected name:scope+scope:sha256hex "
                              "(`sms-mcp api-key NAME` prints one)")
        name, scopes_raw, digest = (p.strip() for p in parts)
        scopes = tuple(s for s in scopes_raw.split("+") if s)
        if not name or len(name) > 64:
            raise ConfigError("SMS_MCP_API_KEYS: every entry needs a name (1-64 characters)")
        unknown = [s for s in scopes if s not in SCOPES]
        if not scopes or unknown:
            raise ConfigError(f"SMS_MCP_API_KEYS entry {name!r}: scopes must be from {', '.join(SCOPES)} "
                              f"joined by '+', got {scopes_raw[:40]!r}")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ConfigError(f"SMS_MCP_API_KEYS entry {name!r}: the third field must be the key's SHA-256 in hex, "
                              "never the key itself")
        return cls(name, scopes, digest.lower())


def _scopes(claims: dict[str, Any]) -> list[str]:
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return [s for s in raw.split() if s]
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


class JwtVerifier:
    """JWT access tokens (RFC 9068 shape) signed by the authorization server's keys."""

    def __init__(self, issuer: str, jwks_url: str, audience: str, leeway_seconds: float = 30.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        # Keys are cached; an unknown kid makes PyJWKClient fetch the set again (key rotation).
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    async def verify(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            log.warning("access token refused: algorithm %r is not an asymmetric JWS algorithm", str(alg)[:20])
            return None
        try:
            signing_key = await anyio.to_thread.run_sync(self._jwks.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token, signing_key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as err:
            log.warning("access token refused: %s", str(err)[:200])
            return None
        subject = str(claims["sub"])
        client_id = str(claims.get("client_id") or claims.get("azp") or subject)
        return AccessToken(token=token, client_id=client_id, scopes=_scopes(claims), expires_at=int(claims["exp"]),
                           resource=self.audience, subject=subject, claims=claims)


class ApiKeyVerifier:
    def __init__(self, entries: list[ApiKeyEntry], resource: str) -> None:
        self.entries = entries
        self.resource = resource

    def verify(self, token: str) -> AccessToken | None:
        digest = hash_api_key(token)
        match = None
        for entry in self.entries:  # every entry is compared, in constant time each
            if hmac.compare_digest(entry.digest, digest):
                match = entry
        if match is None:
            return None
        # The token itself is not kept: the SDK hashes it for session ownership only.
        return AccessToken(token=token, client_id=match.name, scopes=list(match.scopes), expires_at=None,
                           resource=self.resource, subject=match.name, claims={"iss": API_KEY_ISSUER})


class GatewayTokenVerifier:
    """The SDK's ``TokenVerifier``: API keys first (a hash look-up), then JWTs when an issuer is configured."""

    def __init__(self, api_keys: ApiKeyVerifier | None, jwt_verifier: JwtVerifier | None) -> None:
        self.api_keys = api_keys
        self.jwt = jwt_verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.api_keys is not None and token.startswith(API_KEY_PREFIX):
            return self.api_keys.verify(token)
        if self.jwt is not None and token.count(".") == 2:
            return await self.jwt.verify(token)
        return None
