"""Run a chat example behind the local gateway on SQLite; ``scripts/demo`` calls this.

Starts two processes — the local API Gateway (``python -m apigw_ws_core.local``) and the
example app — waits until both answer, prints the URL to open and the demo logins, and stops
both on Ctrl-C (or when either exits).

``scripts/demo announce TEXT`` broadcasts an announcement to every browser of the running
demo through the example's own CLI (``flask apigw-ws send ... --everyone``), as an admin would.

Usage: ``scripts/demo [flask|django] [--port 8000] [--gateway-port 8001]``; the default is
:data:`DEFAULT_EXAMPLE`. The Django entry expects ``examples/django_chat`` to read
``APIGW_WS_SECRET``, ``APIGW_WS_MANAGEMENT_ENDPOINT``, ``CHAT_WS_URL`` and ``CHAT_DATABASE``
from the environment and to offer ``manage.py seed_demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable
#: The example ``scripts/demo`` runs without an argument (the one the browser tests prove).
DEFAULT_EXAMPLE = "flask"


@dataclass
class Example:
    """How to prepare and start one example app."""

    name: str
    directory: Path
    login_path: str
    logins: list[tuple[str, str, str]]
    prepare: Callable[[dict[str, str]], None]
    command: Callable[[int], list[str]]
    env: Callable[[str, str, str, str], dict[str, str]]
    #: The example's command that sends a JSON message to every connection (or ``None``).
    broadcast: Callable[[str], list[str]] | None = None


def _django_env(secret: str, ws_url: str, management: str, db: str) -> dict[str, str]:
    return {
        "APIGW_WS_SECRET": secret,
        "APIGW_WS_MANAGEMENT_ENDPOINT": management,
        "CHAT_WS_URL": ws_url,
        "CHAT_DATABASE": db,
    }


def _django_prepare(env: dict[str, str]) -> None:
    manage = [PYTHON, "manage.py"]
    cwd = EXAMPLES / "django_chat"
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=cwd, env=env, check=True)
    subprocess.run([*manage, "seed_demo"], cwd=cwd, env=env, check=True)


def _flask_env(secret: str, ws_url: str, management: str, db: str) -> dict[str, str]:
    return {
        "FLASK_APIGW_WS_SECRET": secret,
        "FLASK_APIGW_WS_MANAGEMENT_ENDPOINT": management,
        "FLASK_CHAT_WS_URL": ws_url,
        "FLASK_DATABASE_URL": f"sqlite:///{db}",
    }


EXAMPLE_DEFS = {
    "django": Example(
        name="django",
        directory=EXAMPLES / "django_chat",
        login_path="/login/",
        logins=[
            ("alice", "demo", "staff: may enter the private room"),
            ("bob", "demo", "member"),
            ("carol", "demo", "member"),
        ],
        prepare=_django_prepare,
        command=lambda port: [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=_django_env,
        broadcast=lambda message: [PYTHON, "manage.py", "apigw_ws_send", message, "--all"],
    ),
    "flask": Example(
        name="flask",
        directory=EXAMPLES / "flask_chat",
        login_path="/login",
        logins=[
            ("alice", "demo", "staff: may enter the private room"),
            ("bob", "demo", "member"),
            ("carol", "demo", "member"),
        ],
        prepare=lambda env: None,
        command=lambda port: [
            PYTHON,
            "-m",
            "flask",
            "--app",
            "chat",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-reload",
            "--no-debugger",
        ],
        env=_flask_env,
        broadcast=lambda message: [
            PYTHON,
            "-m",
            "flask",
            "--app",
            "chat",
            "apigw-ws",
            "send",
            message,
            "--everyone",
        ],
    ),
}


def _wait_http(
    url: str, process: subprocess.Popen[bytes], what: str = "app", timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: the {what} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: {url} did not answer within {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _inherited_env() -> dict[str, str]:
    """This process's environment, less what would point an example at another project's
    settings (the examples choose their own)."""
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def _state_dir() -> Path:
    return Path(os.environ.get("APIGW_WS_DEMO_STATE", ROOT / ".demo"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _running_demo(running_file: Path) -> dict[str, Any] | None:
    """The running demo's record, or ``None`` (a record left by a killed demo is ignored)."""
    try:
        running: dict[str, Any] = json.loads(running_file.read_text())
    except (OSError, ValueError):
        return None
    pid = running.get("pid")
    if isinstance(pid, int) and _pid_alive(pid):
        return running
    return None


def _refuse_second_demo(running_file: Path, ports: list[int]) -> str | None:
    """Why this demo must not start (another demo runs, or a port is taken), or ``None``.
    Nothing of the running demo is touched."""
    other = _running_demo(running_file)
    if other is not None:
        return (
            f"demo: a demo is already running (pid {other['pid']}, {other.get('url')}); "
            "stop it first (Ctrl-C in its terminal)"
        )
    taken = [port for port in ports if _port_taken(port)]
    if taken:
        listed = " and ".join(str(p) for p in taken)
        return (
            f"demo: port {listed} is in use by another program; stop it or choose "
            "others with --port / --gateway-port"
        )
    return None


def announce(argv: list[str]) -> int:
    """``scripts/demo announce TEXT``: broadcast to every browser of the running demo."""
    parser = argparse.ArgumentParser(prog="scripts/demo announce")
    parser.add_argument("text")
    args = parser.parse_args(argv)
    running = _running_demo(_state_dir() / "running.json")
    if running is None:
        raise SystemExit("demo: no demo is running (start it with scripts/demo)")
    example = EXAMPLE_DEFS[running["example"]]
    if example.broadcast is None:
        raise SystemExit(f"demo: the {example.name} example has no broadcast command")
    message = json.dumps({"type": "announcement", "text": args.text, "from": "admin"})
    env = {**_inherited_env(), **running["env"]}
    done = subprocess.run(example.broadcast(message), cwd=example.directory, env=env, check=False)
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or ``announce``); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["announce"]:
        return announce(argv[1:])
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    parser.add_argument("example", nargs="?", choices=sorted(EXAMPLE_DEFS))
    parser.add_argument("--port", type=int, default=8000, help="the app's port (8000)")
    parser.add_argument("--gateway-port", type=int, default=8001, help="the gateway's (8001)")
    args = parser.parse_args(argv)
    name = args.example or DEFAULT_EXAMPLE
    example = EXAMPLE_DEFS[name]
    if not example.directory.is_dir():
        parser.error(f"{example.directory.relative_to(ROOT)} is not there")

    state = _state_dir()
    state.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    stage = "local"
    ws_url = f"ws://127.0.0.1:{args.gateway_port}/{stage}"
    management = f"http://127.0.0.1:{args.gateway_port}/{stage}"
    demo_env = {
        # The local gateway accepts any well-formed SigV4 signature: dummy keys suffice.
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "PYTHONUNBUFFERED": "1",
        **example.env(secret, ws_url, management, str(state / f"{name}-chat.sqlite3")),
    }
    env = {**_inherited_env(), **demo_env}
    running_file = state / "running.json"
    refusal = _refuse_second_demo(running_file, [args.port, args.gateway_port])
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 1

    gateway = app = None
    stopping = False
    wrote_running_file = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop the demo, even when it was started with SIGINT ignored
    # (a background job of a non-interactive shell inherits SIGINT ignored).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        example.prepare(env)
        gateway = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "apigw_ws_core.local",
                "--backend",
                f"http://127.0.0.1:{args.port}/ws/",
                "--secret",
                secret,
                "--host",
                "127.0.0.1",
                "--port",
                str(args.gateway_port),
                "--stage",
                stage,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        app = subprocess.Popen(example.command(args.port), cwd=example.directory, env=env)
        base = f"http://127.0.0.1:{args.port}"
        _wait_http(f"http://127.0.0.1:{args.gateway_port}/_local/stats", gateway, "gateway")
        _wait_http(base + example.login_path, app)
        width = max(len(user) for user, _, _ in example.logins)
        logins = "\n".join(
            f"      {user:<{width}}  password {password}   ({note})"
            for user, password, note in example.logins
        )
        running_file.write_text(
            json.dumps({"example": name, "env": demo_env, "pid": os.getpid(), "url": base + "/"})
        )
        running_file.chmod(0o600)
        wrote_running_file = True
        broadcast = (
            '  Broadcast to everyone, as an admin:  scripts/demo announce "Hello, everyone"\n'
            if example.broadcast
            else ""
        )
        print(
            f"\n  apigw-ws chat demo ({name}) is running.\n\n"
            f"  Open  {base}/  in two browser windows (one private), log in as two users:\n"
            f"{logins}\n\n"
            f"  WebSocket (local API Gateway): {ws_url}\n"
            f"{broadcast}"
            f"  Press Ctrl-C to stop.\n",
            flush=True,
        )
        while gateway.poll() is None and app.poll() is None:
            time.sleep(0.5)
        which = "gateway" if gateway.poll() is not None else "app"
        print(f"demo: the {which} stopped; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping", file=sys.stderr)
        return 0
    finally:
        if wrote_running_file:
            running_file.unlink(missing_ok=True)
        _stop(app)
        _stop(gateway)


if __name__ == "__main__":
    sys.exit(main())
