"""The token verifier against hostile input: whatever arrives as a bearer token — random text, JWT-shaped
strings with any header, valid tokens with one byte changed — it answers "not authenticated" (None) and never
raises (a raise would be a 500, and a traceback in the log)."""

from __future__ import annotations

import base64
import json

import anyio
import pytest
from http_support import AuthorizationServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_mcp.http.auth import ApiKeyEntry, ApiKeyVerifier, GatewayTokenVerifier, JwtVerifier, hash_api_key

AUDIENCE = "http://127.0.0.1:8000/mcp"
KEY = "smsk_" + "z" * 43


@pytest.fixture(scope="module")
def verifier(idp: AuthorizationServer) -> GatewayTokenVerifier:
    return GatewayTokenVerifier(ApiKeyVerifier([ApiKeyEntry("k", ("sms.read",), hash_api_key(KEY))], AUDIENCE),
                                JwtVerifier(idp.issuer, idp.jwks_url, AUDIENCE))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verify(verifier: GatewayTokenVerifier, token: str) -> object:
    return anyio.run(verifier.verify_token, token)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(max_size=300))
def test_random_text_is_never_a_principal(verifier: GatewayTokenVerifier, token: str) -> None:
    assert _verify(verifier, token) is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jku", "x5u", "crit", "b64"]), json_values,
                              max_size=5),
       claims=st.dictionaries(st.sampled_from(["iss", "aud", "sub", "exp", "scope", "client_id"]), json_values,
                              max_size=6),
       signature=st.binary(max_size=64))
def test_jwt_shaped_garbage_is_never_a_principal(verifier: GatewayTokenVerifier, header: dict[str, object],
                                                 claims: dict[str, object], signature: bytes) -> None:
    token = ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])
    assert _verify(verifier, token) is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_valid_token_with_any_one_character_changed_is_refused(
        verifier: GatewayTokenVerifier, idp: AuthorizationServer, data: st.DataObject) -> None:
    token = idp.token(AUDIENCE)
    assert _verify(verifier, token) is not None
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."))
    tampered = token[:position] + replacement + token[position + 1:]
    if tampered != token:
        result = _verify(verifier, tampered)
        # Base64url's last character can carry unused bits: a change there may decode to the same bytes.
        assert result is None or result.claims == _verify(verifier, token).claims  # type: ignore[attr-defined]
