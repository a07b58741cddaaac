"""API keys: ``Authorization: Bearer <key>`` on every /v1 route, checked by digest."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from modelfleet.errors import AuthenticationFailed

log = logging.getLogger("modelfleet.gateway.auth")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class ApiKeys:
    """The configured keys, kept only as SHA-256 digests.

    Comparing digests in a dict keeps the check O(1) and leaks no timing about the key itself.
    Each key has a short, non-secret id (a digest prefix) that names it in rate-limit keys and
    logs. With no keys configured the gateway is open, and says so once at startup.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._ids = {_digest(k.encode()): "key:" + _digest(k.encode()).hex()[:12] for k in keys}

    @property
    def open(self) -> bool:
        return not self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def identify(self, authorization: bytes | None) -> str:
        """The id of the key in an ``Authorization`` header value, or AuthenticationFailed."""
        if authorization is None:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(b" ")
        key_id = self._ids.get(_digest(token.strip())) if scheme.lower() == b"bearer" else None
        if key_id is None:
            raise AuthenticationFailed("invalid API key")
        return key_id
