"""Provisioning is core: it imports without Django, Flask, SQLAlchemy, aiohttp or boto3."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_provision_imports_without_frameworks_or_boto3() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            BLOCKED = ("django", "flask", "sqlalchemy", "aiohttp", "werkzeug", "redis", "boto3")
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError("blocked " + name)
                return None
        sys.meta_path.insert(0, Block())
        from apigw_ws_core.provision import GatewaySpec, render_changes
        from apigw_ws_core.provision.plan import compute_changes
        from apigw_ws_core.provision.state import Observed
        import apigw_ws_core.provision_cli
        spec = GatewaySpec(name="x", target_base_url="https://a.example.com/",
                           secret="0123456789abcdef")
        print(render_changes(compute_changes(spec, Observed())).splitlines()[-1])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Plan: 10 to create, 0 to update, 0 to delete, 0 unchanged."
