"""A Lambda REQUEST authorizer for a WebSocket API's ``$connect``: HS256 JWTs with PyJWT.

Browsers cannot set headers on a WebSocket handshake, so the token travels in the query
string (``wss://.../prod?token=<jwt>``); declare ``route.request.querystring.token`` as the
authorizer's identity source and API Gateway answers 401 by itself when it is missing.
Configuration comes from the function's environment:

* ``JWT_SECRET``: the HS256 key the tokens are signed with;
* ``JWT_AUDIENCE``: the ``aud`` the tokens must carry (default ``apigw-ws``).

A valid token with the ``ws`` scope is allowed, its ``sub`` becoming the principal and the
``userId`` context value (set ``user_from_authorizer = "userId"`` in the app, and list
``userId`` in the provisioned authorizer's ``context_keys`` for HTTP backends). A valid
token without the scope is denied (403); a bad, expired or foreign token answers 401.
"""

from __future__ import annotations

import os
from typing import Any

import jwt


def _policy(principal: str, effect: str, resource: str, context: dict[str, str]) -> dict[str, Any]:
    """The answer API Gateway expects from a Lambda authorizer."""
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": context,
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Verify ``?token=`` and allow or deny the ``$connect`` of ``event["methodArn"]``."""
    token = (event.get("queryStringParameters") or {}).get("token", "")
    try:
        claims = jwt.decode(
            token,
            os.environ["JWT_SECRET"],
            algorithms=["HS256"],
            audience=os.environ.get("JWT_AUDIENCE", "apigw-ws"),
            options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError:
        # The documented way to make API Gateway answer 401.
        raise Exception("Unauthorized") from None
    subject = str(claims["sub"])
    scopes = str(claims.get("scope", "")).split()
    effect = "Allow" if "ws" in scopes else "Deny"
    return _policy(subject, effect, event["methodArn"], {"userId": subject})
