"""Optional API keys, sent as ``Authorization: Bearer <key>`` like the OpenAI clients do.

Off when no key is configured. The presented key is compared with every configured key
in constant time (``hmac.compare_digest``, no early exit), so response timing does not
reveal which key nearly matched (it does grow with the number of configured keys).
"""

from __future__ import annotations

import hmac

from app.errors import APIError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class APIKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode("utf-8") for key in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise a 401 in OpenAI's envelope unless the header carries a configured key."""
        if not self._keys:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise APIError(
                401,
                "You didn't provide an API key. Send it in an 'Authorization: Bearer YOUR_KEY' header.",
                code="invalid_api_key",
                headers=_CHALLENGE,
            )
        candidate = presented.strip().encode("utf-8")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise APIError(
                401,
                f"Incorrect API key provided: {_masked(presented.strip())}.",
                code="invalid_api_key",
                headers=_CHALLENGE,
            )


def _masked(key: str) -> str:
    """Show only the ends of a wrong key, as OpenAI does."""
    return key[:3] + "*" * max(0, min(len(key) - 7, 20)) + key[-4:] if len(key) > 8 else "*" * len(key)
