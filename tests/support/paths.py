"""Where things are, independent of which test folder asks."""

from __future__ import annotations

import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
MODELS = os.path.join(TESTS, "models")
