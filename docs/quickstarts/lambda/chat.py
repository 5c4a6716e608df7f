"""A chat backend on AWS Lambda: one function for the WebSocket API, one for tokens.

``lambda_handler`` is the ``AWS_PROXY`` integration of every WebSocket route; ``token_handler``
sits behind an HTTP API route with a JWT authorizer (or any authorizer that puts the user's
id in the request context) and hands the browser a single-use connection token.
Configuration comes from the function's environment:

* ``DATABASE_URL``: SQLAlchemy URL of a database both functions reach (e.g. RDS PostgreSQL);
* ``APIGW_WS_MANAGEMENT_ENDPOINT``: ``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}``
  (unset: the running local gateway, when you try it locally);
* ``APIGW_WS_URL``: the ``wss://`` URL browsers connect to;
* ``APIGW_WS_TOKEN_KEY``: the key that signs connection tokens, the same in both functions
  (``python -c "import secrets; print(secrets.token_urlsafe(32))"``; keep it in Secrets
  Manager or SSM Parameter Store like any secret).
"""

import json
import os
from typing import Any

from sqlalchemy.orm import sessionmaker

from apigw_ws_core import Config, HandlerContext, WebSocketApp
from apigw_ws_core.aws_lambda import make_handler
from apigw_ws_core.errors import RequestError
from apigw_ws_storage.sqla import SqlaStorage, create_bounded_engine

# create_bounded_engine: create_engine with every wait on the database bounded (2 s).
engine = create_bounded_engine(os.environ.get("DATABASE_URL", "sqlite:///chat.sqlite3"))
storage = SqlaStorage(sessionmaker(engine))

app = WebSocketApp(
    storage=storage,
    config=Config(
        management_endpoint=os.environ.get("APIGW_WS_MANAGEMENT_ENDPOINT"),
        token_key=os.environ.get("APIGW_WS_TOKEN_KEY"),
    ),
)


@app.handler("chat_message")
def chat_message(ctx: HandlerContext, message: dict[str, Any]) -> None:
    """Relay a chat line to everyone in the sender's channel."""
    text = str(message.get("text", "")).strip()[:500]
    if text:
        ctx.send(
            {"type": "chat_message", "user": ctx.user_id, "text": text},
            channel=ctx.session.channel_name,
        )


@app.handler("whoami")
def whoami(ctx: HandlerContext, message: dict[str, Any]) -> dict[str, Any]:
    """A returned dict is the reply to the sender (on two-way routes)."""
    return {"type": "whoami", "user": ctx.user_id}


lambda_handler = make_handler(app)


def token_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """``GET /ws/token?channel=...`` on an HTTP API (payload format 2.0, JWT authorizer)."""
    claims = event.get("requestContext", {}).get("authorizer", {}).get("jwt", {}).get("claims")
    if not claims or not claims.get("sub"):
        return _json(401, {"error": "not_authenticated", "message": "Log in first."})
    channel = (event.get("queryStringParameters") or {}).get("channel")
    try:
        app.policy.check(claims["sub"], channel or app.config.default_channel)
        token, expires_in = app.issue_token(claims["sub"], channel=channel)
    except RequestError as error:
        return _json(error.status, error.as_dict())
    body = {"token": token, "expires_in": expires_in, "url": os.environ.get("APIGW_WS_URL")}
    return _json(200, body)


def _json(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
        "body": json.dumps(body),
    }
