"""Sphinx configuration of the apigw-ws documentation.

Built in CI with ``sphinx-build -W -b html docs docs/_build/html``: every warning fails the
build. No extension here needs the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The source roots (see pyproject.toml) so autodoc imports work without an install too.
for source_root in (
    "storage",
    "adapters/flask",
    "adapters/django",
    "adapters/fastapi",
    "adapters/celery",
    ".",
):
    sys.path.insert(0, str(ROOT / source_root))

# The Django adapter's modules import Django models; give autodoc a minimal configured Django.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs_django_settings")
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import django

    django.setup()
except ImportError:  # pragma: no cover - Django is in the dev requirements
    pass

project = "apigw-ws"
author = "apigw-ws developers"
copyright = "apigw-ws developers"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "examples/README.md"]
templates_path: list[str] = []
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme = "furo"
html_title = "apigw-ws"
html_theme_options = {
    "source_repository": "",
    "navigation_with_keys": True,
}
pygments_style = "friendly"
pygments_dark_style = "monokai"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Records are attrs classes: their generated __init__ documents nothing new.
autodoc_inherit_docstrings = True
