"""A real app process for the healing tests: plain WSGI on SQLAlchemy storage, served by
werkzeug on a fixed port. ``python -m tests.heal.app_server URL PREFIX PORT SECRET``;
prints ``ready`` once it serves. The tests SIGKILL it with connections open."""

from __future__ import annotations

import sys

from sqlalchemy import MetaData, create_engine
from sqlalchemy.orm import sessionmaker
from werkzeug.serving import make_server

from apigw_ws_core import Config, WebSocketApp
from apigw_ws_core.transport import RecordingTransport
from apigw_ws_core.wsgi import make_wsgi_app
from apigw_ws_storage.sqla import SqlaStorage, make_models


def main() -> None:
    url, prefix, port, secret = sys.argv[1:5]
    engine = create_engine(url, pool_size=8, max_overflow=16)
    storage = SqlaStorage(sessionmaker(engine), models=make_models(MetaData(), prefix=prefix))
    app = WebSocketApp(
        storage=storage,
        transport=RecordingTransport(),
        config=Config(secret=secret, require_token=False, connect_rate_per_ip=None),
    )
    server = make_server("127.0.0.1", int(port), make_wsgi_app(app), threaded=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
