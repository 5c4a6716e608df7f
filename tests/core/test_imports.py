"""The core must import and work with Django, Flask, SQLAlchemy and aiohttp absent."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CORE_MODULES = [
    "apigw_ws_core",
    "apigw_ws_core.app",
    "apigw_ws_core.events",
    "apigw_ws_core.storage",
    "apigw_ws_core.memory",
    "apigw_ws_core.transport",
    "apigw_ws_core.fanout",
    "apigw_ws_core.wsgi",
    "apigw_ws_core.aws_lambda",
    "apigw_ws_core.testing",
    "apigw_ws_core.limits",
    "apigw_ws_core.channels",
    "apigw_ws_core.tokens",
    "apigw_ws_core.config",
    "apigw_ws_core.cli",
    "apigw_ws_core.jobs",
    "apigw_ws_core.http",
    "apigw_ws_core.asgi",
    "apigw_ws_core.asyncsupport",
    "apigw_ws_core.http1",
    "apigw_ws_core.signer",
    "apigw_ws_core.reply",
    "apigw_ws_core.verify",
    "apigw_ws_core.origins",
    "apigw_ws_core.json_rules",
]


def test_core_imports_without_frameworks():
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            BLOCKED = ("django", "flask", "sqlalchemy", "aiohttp", "werkzeug", "redis",
                       "celery", "kombu")
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError("blocked " + name)
                return None
        sys.meta_path.insert(0, Block())
        import importlib
        for mod in {CORE_MODULES!r}:
            importlib.import_module(mod)
        from apigw_ws_core import Config, MemoryStorage, WebSocketApp
        from apigw_ws_core.testing import RecordingTransport
        app = WebSocketApp(storage=MemoryStorage(), transport=RecordingTransport(),
                           config=Config(secret="s", require_token=False))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in Block.BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_storage_backends_import_no_adapter_and_no_private_django_api():
    """Imports point one way (adapters import storage, never the reverse), and the Django
    backend uses Django's public API only (no ``QuerySet._raw_delete``)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "storage"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("apigw_ws_django", "apigw_ws_flask")), (path, name)
            if isinstance(node, ast.Attribute):
                assert node.attr != "_raw_delete", (path, node.lineno)


def test_one_fanout_call_site():
    """Every send path (app.send, CLIs, QuerySet.send_message, durable jobs) goes through
    ``WebSocketApp.deliver``: nothing else in the library calls ``fanout()``."""
    import ast
    from pathlib import Path

    top = Path(__file__).resolve().parents[2]
    callers = []
    for folder in ("apigw_ws_core", "adapters", "storage"):
        for path in (top / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = getattr(func, "id", None) or getattr(func, "attr", None)
                    if name == "fanout":
                        callers.append(f"{path.relative_to(top)}:{node.lineno}")
    assert len(callers) == 1 and callers[0].startswith("apigw_ws_core/app.py"), callers
