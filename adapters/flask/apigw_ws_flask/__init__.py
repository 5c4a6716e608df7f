"""apigw-ws for Flask: the :class:`ApigwWebSocket` extension.

::

    from flask import Flask
    from apigw_ws_flask import ApigwWebSocket
    from apigw_ws_storage.sqla import SqlaStorage

    app = Flask(__name__)
    app.config["APIGW_WS_SECRET"] = "..."
    ws = ApigwWebSocket(app, storage=SqlaStorage(Session))

    @ws.handler("chat_message")
    def chat(ctx, message):
        ws.send({"type": "chat", "text": message["text"]}, channel=ctx.session.channel_name)

See ``docs/quickstart-flask.rst``.
"""

from apigw_ws_core.context import HandlerContext
from apigw_ws_core.handlers import WebSocketView, handler
from apigw_ws_flask.extension import (
    ADAPTER_DEFAULTS,
    EXTENSION_KEY,
    ApigwWebSocket,
    ApigwWsState,
    user_id_of,
)
from apigw_ws_flask.views import CsrfFailed, LoginRequired, to_response

__all__ = [
    "ADAPTER_DEFAULTS",
    "EXTENSION_KEY",
    "ApigwWebSocket",
    "ApigwWsState",
    "CsrfFailed",
    "HandlerContext",
    "LoginRequired",
    "WebSocketView",
    "handler",
    "to_response",
    "user_id_of",
]
