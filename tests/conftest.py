"""Shared test set-up: where the real-data fixtures are.

The fixtures live in ``shared/fixtures`` beside the checkout (``../shared`` from the repository
root), as on the developers' machines and in CI. ``POSEJAX_FIXTURES`` overrides it; the data
presets ``*_fixture.yaml`` read the same variable. Missing fixtures fail the tests that need
them: they are never skipped.
"""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("POSEJAX_FIXTURES", str(REPO.parent / "shared" / "fixtures"))
