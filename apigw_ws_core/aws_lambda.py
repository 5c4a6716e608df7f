"""An AWS Lambda handler over :meth:`WebSocketApp.handle` for WebSocket proxy events.

``lambda_handler = make_handler(app)``; wire it as the ``AWS_PROXY`` integration of
``$connect``, ``$disconnect``, ``$default`` and custom routes. The invocation is authorised by
AWS IAM, so no shared secret is needed (stage/API-id allowlists still apply).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.errors import RequestError
from apigw_ws_core.events import from_lambda

__all__ = ["make_handler"]

LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


def make_handler(app: WebSocketApp) -> LambdaHandler:
    """Return ``handler(event, context) -> {"statusCode", "headers", "body"}``."""

    def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        try:
            reply = app.handle(from_lambda(event, max_body=app.config.max_body_bytes))
        except RequestError as error:
            reply = app.reject(error)
        result: dict[str, Any] = {"statusCode": reply.status, "headers": dict(reply.headers)}
        if reply.body:
            result["body"] = reply.body.decode("utf-8", "replace")
        return result

    return handler
