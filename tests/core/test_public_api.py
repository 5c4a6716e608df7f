"""The public surface, guarded: each package root exports exactly what users import, every
public module says what it exports (``__all__``), and every exported name exists.

Changing a root's exports is an API change: update :data:`ROOT_EXPORTS`, the CHANGELOG and
the docs together."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

ROOT_EXPORTS: dict[str, set[str]] = {
    "apigw_ws_core": {
        # the app, its configuration and handlers
        "WebSocketApp",
        "Config",
        "RateLimit",
        "HandlerContext",
        "handler",
        "WebSocketView",
        "ChannelPolicy",
        "ChannelRule",
        "default_policy",
        "AttributeSpec",
        "HistoryRule",
        # storage: the interface, the memory backend, the records
        "Storage",
        "MemoryStorage",
        "Session",
        "Subscription",
        "Token",
        "Presence",
        "HistoryMessage",
        "HistoryPage",
        # sending
        "SendReport",
        "Transport",
        "RecordingTransport",
        "ManagementApiTransport",
        # events and replies (for custom entry points)
        "ConnectEvent",
        "MessageEvent",
        "DisconnectEvent",
        "from_http",
        "from_lambda",
        "Reply",
        # errors users catch
        "ApigwWsError",
        "ConfigurationError",
        "RequestError",
        "PayloadTooLarge",
        "__version__",
    },
    "apigw_ws_django": {
        "WebSocketView",
        "WebSocketTokenView",
        "handler",
        "get_app",
        "websocket_urlpatterns",
    },
    "apigw_ws_flask": {
        "ApigwWebSocket",
        "HandlerContext",
        "WebSocketView",
        "handler",
        "user_id_of",
    },
    "apigw_ws_fastapi": {"GATEWAY_METHODS", "ApigwWs", "to_response"},
    "apigw_ws_celery": {"TASK_NAME", "CeleryRunner", "send_job"},
    # import-light packages: users import their submodules
    "apigw_ws_storage": set(),
    "apigw_ws_storage.django_orm": set(),
    "apigw_ws_storage.sqla": {
        "SqlaStorage",
        "make_models",
        "Models",
        "DEFAULT_MODELS",
        "NAMING_CONVENTION",
        "SessionSource",
        "UTCDateTime",
        "binary_string",
        "create_bounded_engine",
        "metadata",
    },
}

#: Modules that need an optional extra not installed everywhere, or a configured Django.
_SKIP_WALK = ("apigw_ws_core.local", "apigw_ws_core.provision", "apigw_ws_core.client")


@pytest.mark.parametrize("package", sorted(ROOT_EXPORTS))
def test_package_roots_export_what_users_import(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(getattr(module, "__all__", ()))
    assert exported == ROOT_EXPORTS[package], (
        f"{package}.__all__ changed: added {sorted(exported - ROOT_EXPORTS[package])}, "
        f"removed {sorted(ROOT_EXPORTS[package] - exported)}"
    )
    for name in exported:
        assert hasattr(module, name), f"{package}.{name} is exported but missing"


def test_every_public_core_module_declares_its_exports() -> None:
    import apigw_ws_core

    missing = []
    for info in pkgutil.walk_packages(apigw_ws_core.__path__, "apigw_ws_core."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")) or name.startswith(_SKIP_WALK):
            continue
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(name)
            continue
        for item in exported:
            assert hasattr(module, item), f"{name}.{item} is exported but missing"
    assert not missing, f"modules without __all__: {missing}"


#: Web frameworks, ORMs and task queues: the adapters and storages import them, the core never.
_FRAMEWORKS = ("django", "flask", "werkzeug", "fastapi", "starlette", "celery", "sqlalchemy")


def test_the_core_imports_no_framework() -> None:
    """``apigw_ws_core`` stays framework-free: no import of a web framework, an ORM or a task
    queue anywhere in it (the FastAPI and Celery integrations are packages of their own,
    ``apigw_ws_fastapi`` and ``apigw_ws_celery``)."""
    import ast
    from pathlib import Path

    import apigw_ws_core

    found = []
    for path in sorted(Path(apigw_ws_core.__path__[0]).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in _FRAMEWORKS]
    assert found == []
