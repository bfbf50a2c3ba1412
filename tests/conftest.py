"""Make `tests/helpers.py` importable as `helpers` from every test directory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
