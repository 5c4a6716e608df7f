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
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from apigw_ws_core.errors import LoginRequired, RequestError
from apigw_ws_core.http import handle_http
from apigw_ws_core.reply import Reply
from apigw_ws_core.tokens import TokenRequest, token_endpoint
from apigw_ws_core.wsgi import request_from_environ
from apigw_ws_flask.extension import EXTENSION_KEY, ApigwWsState

__all__ = ["CsrfFailed", "LoginRequired", "register_views", "to_response"]

#: Returns the token request's parsed fields (JSON object or form).
Fields = Callable[[], Mapping[str, Any]]

#: Every method the gateway and token routes answer themselves (``405 method_not_allowed`` for all
#: but ``POST``, after the secret-first check), instead of Werkzeug's HTML 405.
GATEWAY_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]


class CsrfFailed(RequestError):
    """The token endpoint's CSRF token is missing or wrong."""

    status = 400
    code = "csrf_failed"
    default_message = "The CSRF token is missing or invalid."


def to_response(reply: Reply) -> Response:
    """A core :class:`~apigw_ws_core.reply.Reply` as a Flask response."""
    response = Response(reply.body, status=reply.status)
    for name, value in reply.headers:
        response.headers[name] = value
    return response


def _state() -> ApigwWsState:
    state: ApigwWsState = current_app.extensions[EXTENSION_KEY]
    return state


def gateway(route: str) -> Response:
    """One API Gateway integration call: the core's HTTP intake over the WSGI environ."""
    return to_response(handle_http(_state().core, request_from_environ(request.environ, route)))


def _csrf_check(app: Flask, state: ApigwWsState) -> Callable[[Fields], None] | None:
    """The token endpoint's CSRF check, when this adapter must make it itself."""
    if not state.csrf_check or "csrf" in app.extensions:
        return None  # CSRFProtect (if any) already checked this request
    if not app.config.get("WTF_CSRF_ENABLED", True):
        return None
    try:
        from flask_wtf.csrf import validate_csrf

        validation_error: type[Exception] = importlib.import_module("wtforms").ValidationError
    except ImportError:
        return None

    def check(fields: Fields) -> None:
        token = request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")
        try:
            validate_csrf(token or fields().get("csrf_token"))
        except validation_error as exc:
            raise CsrfFailed() from exc

    return check


def token() -> Response:
    """Issue a connection token for the logged-in user (see
    :func:`apigw_ws_core.tokens.token_endpoint`)."""
    state = _state()
    try:
        user_id = state.extension.current_user_id()
    except Exception as exc:  # the user loader's database is down: JSON 503, not HTML
        return to_response(state.core.failure_reply(exc))
    token_request = TokenRequest(
        user_id=user_id,
        method=request.method,
        headers=dict(request.headers.items()),
        read=request.stream.read,
        form=request.form.to_dict,
        check=_csrf_check(current_app, state),
    )
    return to_response(token_endpoint(state.core, token_request))


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
    gateway_bp.add_url_rule(
        "/<route>", "gateway", gateway, methods=GATEWAY_METHODS, provide_automatic_options=False
    )
    app.register_blueprint(gateway_bp)
    exempt = _ExemptOnce(app, gateway_bp)
    exempt()
    app.before_request_funcs.setdefault(None, []).insert(0, exempt)
    if state.token_path:
        token_bp = Blueprint("apigw_ws_token", __name__)
        token_bp.add_url_rule(
            state.token_path,
            "token",
            token,
            methods=GATEWAY_METHODS,
            provide_automatic_options=False,
        )
        app.register_blueprint(token_bp)
    if app.config.get("APIGW_WS_SERVE_CLIENT", True) and "apigw_ws_client" not in app.blueprints:
        from apigw_ws_flask.client import client_blueprint

        app.register_blueprint(client_blueprint)
