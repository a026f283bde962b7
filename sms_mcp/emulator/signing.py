"""Server-side verification of Alibaba Cloud API request signatures (V3 ``ACS3-HMAC-SHA256`` and V2 RPC HMAC-SHA1).

This is the *verifying* side, used only by the HTTP emulator: the sms-mcp client never signs anything itself
(it uses Alibaba's own SDK). The recipe follows shared/reference/dysmsapi.md §5 and §6:

* V3: decode the raw query with form rules (the sync SDK sends ``+`` for a space, aiohttp leaves ``:*,/`` raw),
  re-encode with RFC 3986, canonicalise exactly the headers listed in ``SignedHeaders`` (and no others: the
  HTTP layer adds unsigned ones), check ``x-acs-content-sha256`` against the body bytes, then HMAC-SHA256.
* V2: every query + form-body parameter except ``Signature``, sorted, RFC 3986, ``METHOD&%2F&enc(cqs)``,
  base64 HMAC-SHA1 with ``secret + "&"``.

Verification failures raise :class:`~sms_mcp.wire.base.GatewayError` with the gateway's codes and HTTP statuses,
so the HTTP layer can send ``err.to_body()`` unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote

from sms_mcp.dysmsapi import API_VERSION, GatewayError

V3_ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Alibaba's gateway rejects requests whose timestamp is more than 15 minutes off (reference §5.2).
DEFAULT_WINDOW_SECONDS = 15 * 60

#: V2 envelope parameters: they authenticate the request and are not action parameters.
V2_ENVELOPE_PARAMS = frozenset(
    {
        "Action",
        "Version",
        "Format",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "SignatureType",
        "Timestamp",
        "SecurityToken",
        "RegionId",
    }
)

#: V3 headers a client must sign: without them a captured request could be replayed with a new date or nonce.
V3_REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce")


# --------------------------------------------------------------------------------------------------------------
# Encoding primitives
# --------------------------------------------------------------------------------------------------------------


def percent_encode(value: str) -> str:
    """RFC 3986: ``A-Z a-z 0-9 - _ . ~`` stay, everything else is ``%XX`` of its UTF-8 bytes (space -> %20)."""
    return quote(value, safe="-_.~", encoding="utf-8")


def decode_form(raw: str | bytes) -> list[tuple[str, str]]:
    """Decode a query string or form body with form rules (``+`` is a space), keeping empty values."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="strict")
    return parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")


def canonical_query_string(pairs: Iterable[tuple[str, str]]) -> str:
    """Sorted by name, each ``RFC3986(name)=RFC3986(value)``, joined with ``&``."""
    ordered = sorted(pairs, key=lambda kv: (kv[0], kv[1]))
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in ordered)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# V3
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V3Authorization:
    algorithm: str
    credential: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_v3_authorization(value: str) -> V3Authorization:
    """Parse ``ACS3-HMAC-SHA256 Credential=ID,SignedHeaders=a;b,Signature=hex``."""
    algorithm, _, rest = value.strip().partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    if not algorithm or not all(k in fields for k in ("Credential", "SignedHeaders", "Signature")):
        raise GatewayError(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
    signed = tuple(h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip())
    return V3Authorization(algorithm, fields["Credential"], signed, fields["Signature"].lower())


def v3_canonical_headers(headers: Sequence[tuple[str, str]], signed_headers: Sequence[str]) -> str:
    """``name:value\\n`` for each signed header (sorted), repeated headers folded as sorted values joined by ``,``."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value.strip())
    lines = []
    for name in sorted(signed_headers):
        lines.append(f"{name}:{','.join(sorted(values.get(name, [])))}\n")
    return "".join(lines)


def v3_canonical_request(
    method: str,
    query_pairs: Iterable[tuple[str, str]],
    headers: Sequence[tuple[str, str]],
    signed_headers: Sequence[str],
    payload_hash: str,
    path: str = "/",
) -> str:
    ordered = sorted(signed_headers)
    return "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query_string(query_pairs),
            v3_canonical_headers(headers, ordered),
            ";".join(ordered),
            payload_hash,
        ]
    )


def v3_string_to_sign(canonical_request: str) -> str:
    return f"{V3_ALGORITHM}\n{sha256_hex(canonical_request.encode('utf-8'))}"


def v3_signature(secret: str, canonical_request: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), v3_string_to_sign(canonical_request).encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# V2
# --------------------------------------------------------------------------------------------------------------


def v2_string_to_sign(method: str, params: Iterable[tuple[str, str]]) -> str:
    cqs = canonical_query_string((k, v) for k, v in params if k != "Signature")
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(cqs)}"


def v2_signature(secret: str, method: str, params: Iterable[tuple[str, str]]) -> str:
    digest = hmac.new(
        (secret + "&").encode("utf-8"), v2_string_to_sign(method, params).encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingRequest:
    """What the verifier needs from an HTTP request, independent of the web framework."""

    method: str
    raw_query: str
    #: Every header as received, names in any case, repeated headers repeated.
    headers: Sequence[tuple[str, str]]
    body: bytes = b""
    path: str = "/"

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def form_pairs(self) -> list[tuple[str, str]]:
        """The body's parameters, when it is form-encoded (SendBatchSms's ``*Json`` fields)."""
        if not self.body:
            return []
        ctype = (self.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return []
        return decode_form(self.body)


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature checked out: the action and its parameters, ready for ``EmulatorCore``."""

    action: str
    params: dict[str, str]
    access_key_id: str
    signature_version: str  # "v3" | "v2"


def _parse_timestamp(value: str, header_name: str) -> float:
    try:
        parsed = datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise GatewayError(
            400,
            "InvalidTimeStamp.Format",
            f"Specified time stamp or date value is not well formatted ({header_name}: expected yyyy-MM-ddTHH:mm:ssZ).",
        ) from None
    return parsed.replace(tzinfo=timezone.utc).timestamp()


class NonceCache:
    """Remembers ``(AccessKeyId, nonce)`` pairs for as long as their timestamp would still be accepted."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def check_and_add(self, key_id: str, nonce: str, stamp: float) -> bool:
        """True if the nonce is new (and remember it), False if it was used already.

        ``stamp`` is the request's signed timestamp: a replay must carry the same one, so the nonce only needs
        remembering until that timestamp leaves the window.
        """
        now = self._clock()
        with self._lock:
            if now >= self._next_prune:
                self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
                self._next_prune = now + 30.0
            key = (key_id, nonce)
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                return False
            self._seen[key] = max(stamp + self._ttl, now) + 1.0
            return True


class RequestVerifier:
    """Checks AccessKey, timestamp, signature and nonce of a Dysmsapi request, as Alibaba's gateway does.

    Order of checks: signature scheme/format -> AccessKey exists (404) -> timestamp (400) -> signature (400)
    -> nonce reuse (400). A nonce is remembered only once the signature is valid, so a forged request cannot
    burn a legitimate client's nonce.
    """

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        self._keys = dict(keys)
        self._clock = clock
        self._window = window_seconds
        self._nonces = NonceCache(window_seconds, clock)

    # -- public -----------------------------------------------------------------------------------------------

    def verify(self, request: IncomingRequest) -> VerifiedRequest:
        """Return the verified action and params, or raise :class:`GatewayError`."""
        query_pairs = decode_form(request.raw_query) if request.raw_query else []
        authorization = request.header("authorization")
        if authorization:
            return self._verify_v3(request, query_pairs, authorization)
        # The SDK's V2 path still sends x-acs-action (unsigned), so only a Signature parameter marks V2.
        if any(k == "Signature" for k, _ in query_pairs) or any(k == "Signature" for k, _ in request.form_pairs()):
            return self._verify_v2(request, query_pairs)
        if request.header("x-acs-action"):
            return self._verify_v3(request, query_pairs, "")
        return self._verify_v2(request, query_pairs)

    # -- V3 ---------------------------------------------------------------------------------------------------

    def _verify_v3(
        self, request: IncomingRequest, query_pairs: list[tuple[str, str]], authorization: str
    ) -> VerifiedRequest:
        if not authorization:
            raise GatewayError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards: Authorization header is missing.",
            )
        auth = parse_v3_authorization(authorization)
        if auth.algorithm != V3_ALGORITHM:
            raise GatewayError(
                400,
                "InvalidSignatureMethod",
                f"Specified signature method {auth.algorithm!r} is not supported; use {V3_ALGORITHM}.",
            )
        missing = [h for h in V3_REQUIRED_SIGNED if h not in auth.signed_headers or request.header(h) is None]
        if missing:
            raise GatewayError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards: "
                f"header(s) {', '.join(missing)} must be sent and signed.",
            )
        secret = self._secret(auth.credential)
        stamp = _parse_timestamp(request.header("x-acs-date") or "", "x-acs-date")
        self._check_time(stamp)

        body_hash = sha256_hex(request.body)
        claimed = (request.header("x-acs-content-sha256") or "").strip().lower()
        if not hmac.compare_digest(claimed, body_hash):
            raise GatewayError(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation: "
                "x-acs-content-sha256 does not match the request body.",
            )
        canonical = v3_canonical_request(
            request.method, query_pairs, request.headers, auth.signed_headers, body_hash, request.path
        )
        expected = v3_signature(secret, canonical)
        if not hmac.compare_digest(expected, auth.signature):
            string_to_sign = v3_string_to_sign(canonical).replace("\n", "\\n")
            raise GatewayError(
                400,
                "SignatureDoesNotMatch",
                f"Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}",
            )
        self._check_nonce(auth.credential, request.header("x-acs-signature-nonce") or "", stamp)
        version = (request.header("x-acs-version") or "").strip()
        self._check_version(version)
        params = dict(query_pairs)
        params.update(request.form_pairs())
        return VerifiedRequest((request.header("x-acs-action") or "").strip(), params, auth.credential, "v3")

    # -- V2 ---------------------------------------------------------------------------------------------------

    def _verify_v2(self, request: IncomingRequest, query_pairs: list[tuple[str, str]]) -> VerifiedRequest:
        pairs = query_pairs + request.form_pairs()
        params = dict(pairs)
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise GatewayError(400, f"Missing{name}", f"{name} is mandatory for this action.")
        method = params.get("SignatureMethod", "")
        if method != "HMAC-SHA1":
            raise GatewayError(
                400, "InvalidSignatureMethod", f"Specified signature method {method!r} is not supported; use HMAC-SHA1."
            )
        if params.get("SignatureVersion", "") != "1.0":
            raise GatewayError(400, "InvalidSignatureVersion", "Specified signature version is not valid; use 1.0.")
        key_id = params["AccessKeyId"]
        secret = self._secret(key_id)
        stamp = _parse_timestamp(params["Timestamp"], "Timestamp")
        self._check_time(stamp)
        expected = v2_signature(secret, request.method, pairs)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            raise GatewayError(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + v2_string_to_sign(request.method, pairs),
            )
        self._check_nonce(key_id, params["SignatureNonce"], stamp)
        self._check_version(params.get("Version", ""))
        action = params.get("Action", "")
        if not action:
            raise GatewayError(400, "MissingAction", "Action is mandatory for this request.")
        business = {k: v for k, v in params.items() if k not in V2_ENVELOPE_PARAMS}
        return VerifiedRequest(action, business, key_id, "v2")

    # -- shared checks ------------------------------------------------------------------------------------------

    def _secret(self, key_id: str) -> str:
        secret = self._keys.get(key_id)
        if secret is None:
            raise GatewayError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        return secret

    def _check_time(self, stamp: float) -> None:
        if abs(self._clock() - stamp) > self._window:
            raise GatewayError(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired (more than 15 minutes from the server's clock).",
            )

    def _check_nonce(self, key_id: str, nonce: str, stamp: float) -> None:
        if not nonce:
            raise GatewayError(400, "MissingSignatureNonce", "SignatureNonce is mandatory for this request.")
        if not self._nonces.check_and_add(key_id, nonce, stamp):
            raise GatewayError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")

    @staticmethod
    def _check_version(version: str) -> None:
        if not version:
            raise GatewayError(400, "MissingVersion", "Version is mandatory for this request.")
        if version != API_VERSION:
            raise GatewayError(
                400,
                "InvalidVersion",
                f"Specified parameter Version {version!r} is not valid; Dysmsapi is {API_VERSION}.",
            )
