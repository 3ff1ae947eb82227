"""Fixtures for simulator tests (helpers live in simhelpers.py, next to this file)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simhelpers import served  # noqa: E402,F401  (re-exported fixture)
