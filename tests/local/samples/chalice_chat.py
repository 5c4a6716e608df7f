"""A Chalice WebSocket app, written the way Chalice's documentation shows (nothing local).

Each decorator registers one Lambda function per route (Chalice deploys ``app.connect``,
``app.message`` and ``app.disconnect`` as three functions); ``app.websocket_api`` builds
its Management API client from the API id and ``AWS_REGION``.
"""

from __future__ import annotations

from typing import Any

from boto3.session import Session
from chalice import Chalice, WebsocketDisconnectedError

app = Chalice(app_name="chalice-local-chat")
app.websocket_api.session = Session()
app.experimental_feature_flags.update(["WEBSOCKETS"])

#: Connection ids by the name they gave (a stand-in for the app's table).
MEMBERS: dict[str, str] = {}


@app.on_ws_connect()
def connect(event: Any) -> None:
    """Remember who joined."""
    MEMBERS[event.connection_id] = "anonymous"


@app.on_ws_message()
def message(event: Any) -> None:
    """``/name X`` renames; anything else is broadcast to everyone else."""
    if event.body.startswith("/name "):
        MEMBERS[event.connection_id] = event.body[len("/name ") :]
        app.websocket_api.send(event.connection_id, "ok")
        return
    sender = MEMBERS.get(event.connection_id, "anonymous")
    for other in list(MEMBERS):
        if other == event.connection_id:
            continue
        try:
            app.websocket_api.send(other, f"{sender}: {event.body}")
        except WebsocketDisconnectedError:
            MEMBERS.pop(other, None)


@app.on_ws_disconnect()
def disconnect(event: Any) -> None:
    """Forget who left."""
    MEMBERS.pop(event.connection_id, None)
