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
from apigw_ws_flask.extension import ApigwWebSocket, user_id_of

# What users import. The rest is importable from its module and documented there:
# ``apigw_ws_flask.extension`` (ApigwWsState, EXTENSION_KEY, ADAPTER_DEFAULTS) and
# ``apigw_ws_flask.views`` (to_response, CsrfFailed).
__all__ = ["ApigwWebSocket", "HandlerContext", "WebSocketView", "handler", "user_id_of"]
