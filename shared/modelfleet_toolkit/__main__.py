"""``python -m modelfleet_toolkit`` == the ``modelfleet`` CLI."""

import sys

from modelfleet_toolkit.cli import main

sys.exit(main())
