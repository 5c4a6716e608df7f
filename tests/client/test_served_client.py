"""The Django static file and the Flask blueprint serve the very client in apigw_ws_core/client
(one source: the Django static file is a symlink, which wheels and sdists store as a copy)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "apigw_ws_core" / "client"


def test_django_static_file_is_the_core_client():
    static = ROOT / "adapters/django/apigw_ws_django/static/apigw_ws/apigw-ws.js"
    assert static.is_symlink()
    assert static.resolve() == (CLIENT / "apigw-ws.js").resolve()
    assert sorted(p.name for p in static.parent.iterdir()) == ["apigw-ws.js"]


def test_django_staticfiles_finds_the_core_client():
    pytest.importorskip("django")
    from django.contrib.staticfiles import finders

    found = finders.find("apigw_ws/apigw-ws.js")
    assert found is not None
    assert Path(found).read_bytes() == (CLIENT / "apigw-ws.js").read_bytes()


def test_flask_blueprint_serves_the_core_client():
    flask = pytest.importorskip("flask")
    from apigw_ws_flask.client import client_blueprint

    app = flask.Flask(__name__)
    app.register_blueprint(client_blueprint)
    http = app.test_client()
    response = http.get("/apigw-ws/apigw-ws.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.data == (CLIENT / "apigw-ws.js").read_bytes()
    response.close()
    assert http.get("/apigw-ws/apigw-ws.d.ts").status_code == 404  # types: the npm package
    assert http.get("/apigw-ws/README.md").status_code == 404
    assert http.get("/apigw-ws/../app.py").status_code == 404


def test_flask_extension_serves_the_client_unless_disabled():
    flask = pytest.importorskip("flask")
    from apigw_ws_core import MemoryStorage
    from apigw_ws_flask import ApigwWebSocket

    def build(**config):
        app = flask.Flask(__name__)
        app.config.update(APIGW_WS_SECRET="s3cret-value", **config)
        ApigwWebSocket(app, storage=MemoryStorage())
        return app.test_client()

    response = build().get("/apigw-ws/apigw-ws.js")
    assert response.status_code == 200
    assert response.data == (CLIENT / "apigw-ws.js").read_bytes()
    response.close()
    assert build(APIGW_WS_SERVE_CLIENT=False).get("/apigw-ws/apigw-ws.js").status_code == 404
