"""Serve the browser client (``apigw_ws_core/client/apigw-ws.js``) from a Flask blueprint.

The file ships inside the core package; this blueprint serves that very file, so there is
nothing to copy or build. :class:`~apigw_ws_flask.ApigwWebSocket` registers it for you unless
``APIGW_WS_SERVE_CLIENT`` is false; register it yourself only then, or without the extension::

    from apigw_ws_flask.client import client_blueprint
    app.register_blueprint(client_blueprint)              # GET /apigw-ws/apigw-ws.js

    {% set client_url = url_for('apigw_ws_client.asset', filename='apigw-ws.js') %}
    <script type="module">
      import { ApigwWsClient } from "{{ client_url }}";
    </script>
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, abort, send_from_directory

__all__ = ["CLIENT_FILES", "client_blueprint", "client_dir"]

#: The files the blueprint serves, with their media types.
CLIENT_FILES = {
    "apigw-ws.js": "text/javascript",
}


def client_dir() -> Path:
    """The directory holding the browser client inside the installed core package (a
    regular directory: the core is never imported from a zip file)."""
    return Path(str(files("apigw_ws_core").joinpath("client")))


client_blueprint = Blueprint("apigw_ws_client", __name__, url_prefix="/apigw-ws")


@client_blueprint.get("/<path:filename>")
def asset(filename: str) -> Response:
    """One of :data:`CLIENT_FILES`; anything else is a 404."""
    mimetype = CLIENT_FILES.get(filename)
    if mimetype is None:
        abort(404)
    response = send_from_directory(client_dir(), filename, mimetype=mimetype, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
