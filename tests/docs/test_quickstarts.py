"""Each quickstart works as a new user runs it: from the wheel, in an empty folder.

The wheel is built and installed (not editable) with ``[all]`` into a fresh virtualenv outside
the repository (pip's cache is reused; nothing but PyPI is reached). For each quickstart page,
exactly the files the page includes (``literalinclude`` of ``docs/quickstarts/<name>/...``) are
written into an empty folder; the page's commands run there with that virtualenv only (no
PYTHONPATH, no AWS credentials, no configuration): the servers behind the local gateway, a
token from the command line, a real ``websockets`` client (connect, a message round trip), and
a send from the CLI in a separate process that reaches the client. Every page's own tests run
too.

One virtualenv serves all four quickstarts, so the whole module costs one install.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port, port_open

websockets = pytest.importorskip("websockets")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SECRET = "dev-secret-change-me-0123456789abcdef"  # what the pages' files use by default
PAGES = {
    "django": "quickstart-django.rst",
    "flask": "quickstart-flask.rst",
    "wsgi": "wsgi.rst",
    "lambda": "quickstart-lambda.rst",
}
INCLUDE = re.compile(
    r"^\.\. literalinclude:: quickstarts/(?P<name>[\w-]+)/(?P<path>\S+)\n"
    r"(?P<options>(?:[ \t]+:[^\n]*\n)*)",
    re.M,
)


def included_files(name: str) -> dict[str, Path]:
    """The files page ``name`` includes, by their path in the project. Each must appear at
    least once whole (no :lines:, :start-after:, :pyobject: ...): what a reader copies."""
    text = (DOCS / PAGES[name]).read_text(encoding="utf-8")
    whole: dict[str, Path] = {}
    partial: set[str] = set()
    for match in INCLUDE.finditer(text):
        if match["name"] != name:
            continue
        options = {line.strip().split(":")[1] for line in match["options"].splitlines()}
        if options - {"language", "caption"}:
            partial.add(match["path"])
        else:
            whole[match["path"]] = DOCS / "quickstarts" / name / match["path"]
    assert partial <= set(whole), f"{PAGES[name]} shows parts of {partial - set(whole)} only"
    on_disk = {
        str(p.relative_to(DOCS / "quickstarts" / name))
        for p in (DOCS / "quickstarts" / name).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert on_disk == set(whole), f"{PAGES[name]} does not show {on_disk - set(whole)}"
    return whole


def test_every_quickstart_file_is_shown_whole():
    for name in PAGES:
        assert included_files(name)


# --- the environment a new user has ---------------------------------------------------------


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    """A fresh virtualenv outside the repository with the wheel installed from PyPI deps."""
    base = Path(tempfile.mkdtemp(prefix="apigw-ws-quickstarts-"))
    assert ROOT not in base.parents
    wheels = base / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = wheels.glob("apigw_ws-*.whl")
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    subprocess.run(
        [
            str(env_dir / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{wheel}[all]",
            "websockets",
            "pytest",
        ],
        check=True,
        timeout=900,
        env={**_clean_env(env_dir, base), "PIP_CACHE_DIR": _pip_cache()},
    )
    yield env_dir
    shutil.rmtree(base, ignore_errors=True)


def _pip_cache() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or str(Path.home() / ".cache" / "pip")


def _clean_env(env_dir: Path, home: Path) -> dict[str, str]:
    """Only the virtualenv: no PYTHONPATH into the repository, no AWS credentials."""
    env = {
        "PATH": f"{env_dir / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(env_dir),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "PYTHONUNBUFFERED": "1",
    }
    return env


class Project:
    """One quickstart materialised in an empty folder, run with the fresh virtualenv."""

    def __init__(self, name: str, venv: Path, base: Path):
        self.name = name
        self.dir = base / name
        self.dir.mkdir()
        for rel, source in included_files(name).items():
            target = self.dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
        self.env = _clean_env(venv, base)
        self.env["APIGW_WS_RUNTIME_DIR"] = str(base / f"runtime-{name}")
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *cmd: str, timeout: float = 120, **env: str) -> str:
        """Run a command to completion; its stdout (fails with its output otherwise)."""
        result = subprocess.run(
            list(cmd),
            cwd=self.dir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def start(self, *cmd: str, **env: str) -> subprocess.Popen[str]:
        log = open(self.dir.parent / f"{self.name}-{len(self.procs)}.log", "w")
        proc = subprocess.Popen(
            list(cmd),
            cwd=self.dir,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.dir.parent.glob(f"{self.name}-*.log"))
        )

    def wait_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(port):
                return
            assert all(p.poll() is None for p in self.procs), self.logs()
            time.sleep(0.2)
        raise AssertionError(f"port {port} never opened\n{self.logs()}")

    def stop(self, *ports: int) -> None:
        """SIGTERM every started process; their ports must be free afterwards."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{proc.args} ignored SIGTERM\n{self.logs()}") from None
        deadline = time.monotonic() + 10
        while any(port_open(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(port_open(p) for p in ports), f"ports still taken: {ports}"


def chat_round_trip(project: Project, ws_url: str, token: str, send_cmd: list[str]) -> None:
    """Connect with a real WebSocket client, send a chat line and get it back, then a send
    from the CLI in another process reaches the client."""

    async def scenario() -> None:
        url = f"{ws_url}?channel=general&ws_token={token}"
        async with websockets.connect(url, open_timeout=20) as client:
            await client.send(json.dumps({"action": "chat_message", "text": "hello"}))
            line = json.loads(await asyncio.wait_for(client.recv(), 20))
            assert line["type"] == "chat_message" and line["text"] == "hello", line
            out = await asyncio.to_thread(project.run, *send_cmd)
            assert "Delivered 1" in out, out
            notice = json.loads(await asyncio.wait_for(client.recv(), 20))
            assert notice == {"type": "announcement", "text": "hi all"}

    asyncio.run(scenario())


ANNOUNCEMENT = '{"type": "announcement", "text": "hi all"}'


@pytest.fixture
def base(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tempfile.mkdtemp(prefix="apigw-ws-quickstart-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_django_quickstart(venv: Path, base: Path):
    project = Project("django", venv, base)
    project.run("python", "manage.py", "migrate", "-v", "0")
    project.run("python", "manage.py", "test", "-v", "0")
    project.run(
        "python",
        "manage.py",
        "createsuperuser",
        "--noinput",
        "--username",
        "alice",
        "--email",
        "alice@example.com",
        DJANGO_SUPERUSER_PASSWORD="change-me",
    )
    app_port, port = free_port(), free_port()
    project.start(
        "python",
        "manage.py",
        "apigw_ws_local",
        "--runserver-port",
        str(app_port),
        "--port",
        str(port),
    )
    try:
        project.wait_port(port)
        project.wait_port(app_port)
        token = project.run("python", "manage.py", "apigw_ws_token", "alice").strip()
        chat_round_trip(
            project,
            f"ws://127.0.0.1:{port}/local",
            token,
            ["python", "manage.py", "apigw_ws_send", ANNOUNCEMENT, "--all"],
        )
    finally:
        project.stop(app_port, port)


def test_flask_quickstart(venv: Path, base: Path):
    project = Project("flask", venv, base)
    project.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py")
    app_port, port = free_port(), free_port()
    project.start(
        "flask",
        "--app",
        "app",
        "apigw-ws",
        "local",
        "--port",
        str(port),
        "--app-port",
        str(app_port),
    )
    try:
        project.wait_port(port)
        project.wait_port(app_port)
        token = project.run("flask", "--app", "app", "apigw-ws", "token", "alice").strip()
        chat_round_trip(
            project,
            f"ws://127.0.0.1:{port}/local",
            token,
            ["flask", "--app", "app", "apigw-ws", "send", ANNOUNCEMENT, "--everyone"],
        )
    finally:
        project.stop(app_port, port)  # SIGTERM to `flask apigw-ws local` frees both ports


def test_wsgi_quickstart(venv: Path, base: Path):
    project = Project("wsgi", venv, base)
    app_port, port = free_port(), free_port()
    project.start("python", "app.py", PORT=str(app_port))
    project.start(
        "apigw-ws",
        "local",
        "--backend",
        f"http://127.0.0.1:{app_port}/ws/",
        "--secret",
        SECRET,
        "--port",
        str(port),
    )
    try:
        project.wait_port(app_port)
        project.wait_port(port)
        project.run("python", "-c", "import app; assert callable(app.application)")
        token = project.run("apigw-ws", "token", "--app", "app", "alice").strip()
        chat_round_trip(
            project,
            f"ws://127.0.0.1:{port}/local",
            token,
            ["apigw-ws", "send", "--app", "app", ANNOUNCEMENT, "--everyone"],
        )
    finally:
        project.stop(app_port, port)


def test_lambda_quickstart(venv: Path, base: Path):
    project = Project("lambda", venv, base)
    project.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py")
    # as the page says: the token command and the gateway share one signing key
    project.env["APIGW_WS_TOKEN_KEY"] = "local-only-token-key-0123456789abcdef"
    (project.dir / "chat.sqlite3").unlink(missing_ok=True)  # the test's; start afresh
    project.run("python", "-c", "import chat; chat.storage.create_tables()")
    port = free_port()
    project.start(
        "apigw-ws",
        "local",
        "--lambda",
        "chat:lambda_handler",
        "--two-way",
        "$default",
        "--port",
        str(port),
    )
    try:
        project.wait_port(port)
        token = project.run("apigw-ws", "token", "--app", "chat", "alice").strip()
        chat_round_trip(
            project,
            f"ws://127.0.0.1:{port}/local",
            token,
            ["apigw-ws", "send", "--app", "chat", ANNOUNCEMENT, "--everyone"],
        )
    finally:
        project.stop(port)
