"""Entry point for ``python -m app.bulk``."""

import sys

from app.bulk.cli import main

sys.exit(main())
