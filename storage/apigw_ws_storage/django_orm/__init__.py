"""Django ORM storage for apigw-ws: a reusable Django app (label ``apigw_ws_storage``).

Add ``"apigw_ws_storage.django_orm"`` to ``INSTALLED_APPS`` and run ``migrate``. The app holds
the models (:class:`~apigw_ws_storage.django_orm.models.WebSocketSession` and friends) and
:class:`~apigw_ws_storage.django_orm.storage.DjangoStorage`, the
:class:`~apigw_ws_core.storage.Storage` implementation the Django adapter uses by default.

Import models and the storage class from their modules (``.models``, ``.storage``): this
package's ``__init__`` stays import-light so it can be listed in ``INSTALLED_APPS``.
"""

__all__: list[str] = []
