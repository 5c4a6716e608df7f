"""Storage backends for apigw-ws that need a third-party library.

* :mod:`apigw_ws_storage.django_orm` - a Django app with models, migrations and a
  :class:`~apigw_ws_core.storage.Storage` on the Django ORM (``pip install apigw-ws[django]``).
* :mod:`apigw_ws_storage.sqla` - SQLAlchemy 2.x models and a ``Storage`` (``[sqlalchemy]``).

Each backend passes the storage contract suite in :mod:`apigw_ws_core.testing`. This package
itself imports nothing, so installing one backend never requires the other's library.
"""

__all__: list[str] = []
