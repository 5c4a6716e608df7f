"""apigw-ws: WebSockets for ordinary Python web apps behind AWS API Gateway WebSocket APIs.

The core is framework-free (attrs and botocore only). Start with :class:`WebSocketApp`.
"""

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.attributes import AttributeSpec
from apigw_ws_core.channels import ChannelPolicy, ChannelRule, default_policy
from apigw_ws_core.config import Config, RateLimit
from apigw_ws_core.context import HandlerContext
from apigw_ws_core.errors import ApigwWsError, ConfigurationError, PayloadTooLarge, RequestError
from apigw_ws_core.events import ConnectEvent, DisconnectEvent, MessageEvent, from_http, from_lambda
from apigw_ws_core.fanout import SendReport
from apigw_ws_core.handlers import WebSocketView, handler
from apigw_ws_core.history import HistoryRule
from apigw_ws_core.http1 import ManagementApiTransport
from apigw_ws_core.memory import MemoryStorage
from apigw_ws_core.reply import Reply
from apigw_ws_core.storage import (
    HistoryMessage,
    HistoryPage,
    Presence,
    Session,
    Storage,
    Subscription,
    Token,
)
from apigw_ws_core.transport import RecordingTransport, Transport

__version__ = "0.1.0"

__all__ = [
    "ApigwWsError",
    "AttributeSpec",
    "ChannelPolicy",
    "ChannelRule",
    "Config",
    "ConfigurationError",
    "ConnectEvent",
    "DisconnectEvent",
    "HandlerContext",
    "HistoryMessage",
    "HistoryPage",
    "HistoryRule",
    "ManagementApiTransport",
    "MemoryStorage",
    "MessageEvent",
    "PayloadTooLarge",
    "Presence",
    "RateLimit",
    "RecordingTransport",
    "Reply",
    "RequestError",
    "SendReport",
    "Session",
    "Storage",
    "Subscription",
    "Token",
    "Transport",
    "WebSocketApp",
    "WebSocketView",
    "__version__",
    "default_policy",
    "from_http",
    "from_lambda",
    "handler",
]
