"""``python -m apigw_ws_core`` runs the ``apigw-ws`` console script."""

import sys

from apigw_ws_core.cli import main

sys.exit(main())
