"""The two blueprints: API Gateway's integration endpoints and the token endpoint.

* ``apigw_ws`` — ``POST {APIGW_WS_URL_PREFIX}/<route>`` (``connect``, ``disconnect``,
  ``default``, custom routes). Called by API Gateway, proven by the shared secret, so it is
  exempt from Flask-WTF's CSRF protection (whether ``CSRFProtect`` is set up before or after
  this extension).
* ``apigw_ws_token`` — ``POST {APIGW_WS_TOKEN_PATH}``: a logged-in browser fetches a
  single-use connection token, ``{"token": ..., "expires_in": ...}``. Protected by
  ``CSRFProtect`` when the app has it; otherwise, when Flask-WTF is installed and
  ``APIGW_WS_TOKEN_CSRF`` is true, the CSRF token is checked here.
"""

from __future__ import annotations

import importlib
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from apigw_ws_core.app import Reply, WebSocketApp
from apigw_ws_core.errors import BodyTooLarge, InvalidChannel, RequestError
from apigw_ws_core.events import from_http
from apigw_ws_core.wsgi import read_bounded
from apigw_ws_flask.extension import EXTENSION_KEY, ApigwWsState

__all__ = ["CsrfFailed", "LoginRequired", "register_views", "to_response"]


class LoginRequired(RequestError):
    """The token endpoint was called without a logged-in user."""

    status = 401
    code = "login_required"
    default_message = "Log in to get a connection token."


class CsrfFailed(RequestError):
    """The token endpoint's CSRF token is missing or wrong."""

    status = 400
    code = "csrf_failed"
    default_message = "The CSRF token is missing or invalid."


def to_response(reply: Reply) -> Response:
    """A core :class:`~apigw_ws_core.app.Reply` as a Flask response."""
    response = Response(reply.body, status=reply.status)
    for name, value in reply.headers:
        response.headers[name] = value
    return response


def _state() -> ApigwWsState:
    state: ApigwWsState = current_app.extensions[EXTENSION_KEY]
    return state


def gateway(route: str) -> Response:
    """One API Gateway integration call → one core event → the core's reply."""
    core: WebSocketApp = _state().core
    limit = core.config.max_body_bytes
    try:
        if (request.content_length or 0) > limit:
            raise BodyTooLarge(f"Message body exceeds {limit} bytes.")
        body = read_bounded(request.stream.read, limit)  # chunked bodies too, bounded
        event = from_http(
            route,
            dict(request.headers.items()),
            request.environ.get("QUERY_STRING", ""),
            body,
            max_body=limit,
        )
    except RequestError as error:
        return to_response(core.reject(error, dict(request.headers.items())))
    return to_response(core.handle(event))


def _check_csrf(app: Flask, state: ApigwWsState) -> None:
    if not state.csrf_check or "csrf" in app.extensions:
        return  # CSRFProtect (if any) already checked this request
    if not app.config.get("WTF_CSRF_ENABLED", True):
        return
    try:
        from flask_wtf.csrf import validate_csrf

        validation_error: type[Exception] = importlib.import_module("wtforms").ValidationError
    except ImportError:
        return
    token = request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")
    if token is None:
        payload = _json_payload(state.core)
        token = payload.get("csrf_token") if payload is not None else None
    try:
        validate_csrf(token or request.form.get("csrf_token"))
    except validation_error as exc:
        raise CsrfFailed() from exc


#: Token requests carry a channel and perhaps a CSRF token: a few hundred bytes at most.
MAX_TOKEN_BODY = 4096


def _json_payload(core: WebSocketApp) -> dict[str, Any] | None:
    """The token request's JSON object (``None`` for a non-JSON body), parsed with the
    core's rules; malformed or oversized JSON is a 400/413."""
    if not request.is_json:
        return None
    if (request.content_length or 0) > MAX_TOKEN_BODY:
        raise BodyTooLarge(f"Token request body exceeds {MAX_TOKEN_BODY} bytes.")
    return core.parse_message(request.get_data(cache=True))


def token() -> Response:
    """Issue a connection token for the logged-in user (JSON body: optional ``channel``)."""
    state = _state()
    core = state.core
    try:
        _check_csrf(current_app, state)
        user_id = state.extension.current_user_id()
        if user_id is None:
            raise LoginRequired()
        payload = _json_payload(core)
        channel = payload.get("channel") if payload is not None else None
        channel = channel if channel is not None else request.form.get("channel")
        if channel is not None and not isinstance(channel, str):
            raise InvalidChannel()
        origin = request.headers.get("Origin") if state.bind_origin else None
        value, expires_in = core.issue_token(user_id, channel=channel, origin=origin)
    except RequestError as error:
        response = to_response(core.reject(error))
    else:
        response = to_response(Reply.json(200, {"token": value, "expires_in": expires_in}))
    response.headers["Cache-Control"] = "no-store"
    return response


class _ExemptOnce:
    """App-level ``before_request`` hook (first in line) that exempts the gateway blueprint
    from Flask-WTF's ``CSRFProtect``, however late ``CSRFProtect`` was set up."""

    def __init__(self, app: Flask, blueprint: Blueprint):
        self.app = app
        self.blueprint = blueprint
        self.exempted_by: object = None

    def __call__(self) -> None:
        csrf = self.app.extensions.get("csrf")
        if csrf is not None and csrf is not self.exempted_by:
            csrf.exempt(self.blueprint)
            self.exempted_by = csrf


def register_views(app: Flask, state: ApigwWsState) -> None:
    """Register the gateway and token blueprints for ``state`` on ``app``."""
    gateway_bp = Blueprint("apigw_ws", __name__, url_prefix=state.url_prefix or None)
    gateway_bp.add_url_rule("/<route>", "gateway", gateway, methods=["POST"])
    app.register_blueprint(gateway_bp)
    exempt = _ExemptOnce(app, gateway_bp)
    exempt()
    app.before_request_funcs.setdefault(None, []).insert(0, exempt)
    if state.token_path:
        token_bp = Blueprint("apigw_ws_token", __name__)
        token_bp.add_url_rule(state.token_path, "token", token, methods=["POST"])
        app.register_blueprint(token_bp)
    if app.config.get("APIGW_WS_SERVE_CLIENT", True) and "apigw_ws_client" not in app.blueprints:
        from apigw_ws_flask.client import client_blueprint

        app.register_blueprint(client_blueprint)
