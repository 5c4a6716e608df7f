"""``python -m apigw_ws_core.local``: run the local gateway (same flags as ``apigw-ws local``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
