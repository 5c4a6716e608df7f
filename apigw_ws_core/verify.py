"""Proof that a call came from our API Gateway: the shared secret and the allowlists.

HTTP calls must carry ``X-Apigw-Ws-Secret`` (compared in constant time, current and
previous secret during a rotation); Lambda invocations were authorised by AWS IAM.
``allowed_stages`` and ``allowed_api_ids`` apply to both.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from apigw_ws_core.errors import Forbidden

if TYPE_CHECKING:
    from apigw_ws_core.config import Config
    from apigw_ws_core.events import Event

__all__ = ["secret_matches", "verify_event", "verify_secret"]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def secret_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the configured one.

    Both sides are hashed first, so the time taken reveals neither content nor length;
    any string (non-ASCII, lone surrogates) is handled without raising.
    """
    return hmac.compare_digest(_digest(presented or ""), _digest(expected))


def verify_secret(config: Config, presented: str | None) -> None:
    """Raise :class:`~apigw_ws_core.errors.Forbidden` unless ``presented`` is the gateway
    secret (or the previous one during a rotation). Without a configured secret every
    HTTP call is refused unless ``allow_insecure_no_secret``."""
    if config.secret:
        # with a previous secret set both comparisons run, whichever matches
        current = secret_matches(presented, config.secret)
        previous = bool(config.previous_secret) and secret_matches(
            presented, config.previous_secret or config.secret
        )
        if not (current or previous):
            raise Forbidden("Missing or wrong gateway secret.")
    elif not config.allow_insecure_no_secret:
        raise Forbidden("Gateway secret is not configured on the server.")


def verify_event(config: Config, event: Event) -> None:
    """Prove the call came from our API Gateway; raise ``Forbidden`` otherwise."""
    if event.source == "http":
        verify_secret(config, event.secret)
    if config.allowed_stages and event.stage not in config.allowed_stages:
        raise Forbidden("Stage not allowed.")
    if config.allowed_api_ids and event.api_id not in config.allowed_api_ids:
        raise Forbidden("API not allowed.")
