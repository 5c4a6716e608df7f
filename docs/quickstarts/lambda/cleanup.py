"""Scheduled healing and housekeeping for the Lambda chat.

An EventBridge schedule invokes ``cleanup_handler`` every 10 minutes. It asks API Gateway
about sessions that may be stale (their ``$disconnect`` was lost), marks disconnected
exactly those it no longer knows, and removes expired tokens, counters and old sessions.
"""

from __future__ import annotations

from typing import Any

from chat import app  # the same WebSocketApp the WebSocket routes use


def cleanup_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Run one cleanup; return its counts (visible in the invocation's result and logs)."""
    # Leave 20 s of the invocation for the storage housekeeping after healing.
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 300.0
    return app.cleanup(deadline=max(5.0, remaining - 20.0)).as_dict()
