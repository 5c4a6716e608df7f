"""apigw-ws: WebSockets for ordinary Python web apps behind AWS API Gateway WebSocket APIs.

The core is framework-free (attrs and botocore only). Start with :class:`WebSocketApp`.

How the modules fit (each holds one concept):

* entry points - :mod:`~apigw_ws_core.http` (the one HTTP intake: method, length, body,
  secret-first refusals) under :mod:`~apigw_ws_core.wsgi`, :mod:`~apigw_ws_core.asgi`,
  :mod:`~apigw_ws_fastapi` and the Django/Flask views; :mod:`~apigw_ws_core.aws_lambda`;
* the pipeline - :mod:`~apigw_ws_core.events` -> :mod:`~apigw_ws_core.app`
  (``WebSocketApp.handle``) -> :mod:`~apigw_ws_core.reply`; its rules live beside it:
  :mod:`~apigw_ws_core.verify` (the secret), :mod:`~apigw_ws_core.origins`,
  :mod:`~apigw_ws_core.json_rules`, :mod:`~apigw_ws_core.limits`,
  :mod:`~apigw_ws_core.channels`, :mod:`~apigw_ws_core.tokens` (tokens and the token
  endpoint), :mod:`~apigw_ws_core.handlers` / :mod:`~apigw_ws_core.context`,
  :mod:`~apigw_ws_core.asyncsupport` (``async def`` handlers);
* sending - ``WebSocketApp.send`` -> ``WebSocketApp.deliver`` (the one fan-out call) ->
  :mod:`~apigw_ws_core.fanout` -> :mod:`~apigw_ws_core.transport` (the contract), whose real
  implementation is :mod:`~apigw_ws_core.http1` signed by :mod:`~apigw_ws_core.signer`;
  background sends: ``WebSocketApp.background_runner`` (thread pool by default,
  :mod:`~apigw_ws_celery` for durable :mod:`~apigw_ws_core.jobs`);
* storage - :mod:`~apigw_ws_core.storage` (the contract), :mod:`~apigw_ws_core.memory`,
  :mod:`~apigw_ws_core.testing` (the contract suite); provisioning records are
  :mod:`~apigw_ws_core.gateways`.
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
