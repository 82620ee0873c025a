"""``python -m diagnostics.smoke``: the GPU verification run (see diagnostics/smoke/__init__.py)."""

import sys

from diagnostics.smoke.cli import main

sys.exit(main())
