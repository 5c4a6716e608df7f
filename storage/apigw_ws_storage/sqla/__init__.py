"""SQLAlchemy 2.x storage for apigw-ws: typed models and a :class:`SqlaStorage`.

No Flask dependency: use it from Flask (``db.session`` or your own ``sessionmaker``), from
a plain WSGI app, a Lambda function or a script::

    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker
    from apigw_ws_storage.sqla import SqlaStorage

    engine = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)
    storage = SqlaStorage(sessionmaker(engine))
    storage.create_tables()          # or let Alembic create them (see make_models)
"""

from apigw_ws_storage.sqla.engine import create_bounded_engine
from apigw_ws_storage.sqla.models import (
    DEFAULT_MODELS,
    NAMING_CONVENTION,
    Models,
    make_models,
    metadata,
)
from apigw_ws_storage.sqla.storage import SessionSource, SqlaStorage
from apigw_ws_storage.sqla.types import UTCDateTime, binary_string

__all__ = [
    "DEFAULT_MODELS",
    "NAMING_CONVENTION",
    "Models",
    "SessionSource",
    "SqlaStorage",
    "UTCDateTime",
    "binary_string",
    "create_bounded_engine",
    "make_models",
    "metadata",
]
