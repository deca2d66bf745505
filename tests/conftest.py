"""Shared test set-up: where the real-data fixtures are.

The fixtures live in ``shared/fixtures`` beside the checkout (``../shared`` from the repository
root), as on the developers' machines and in CI. ``POSEJAX_FIXTURES`` overrides it; the data
presets ``*_fixture.yaml`` read the same variable. Missing fixtures fail the tests that need
them: they are never skipped.
"""

import os
import pathlib
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("POSEJAX_FIXTURES", str(REPO.parent / "shared" / "fixtures"))

# XLA:CPU compiles are most of a small test's time: optimisation level 0 makes them several
# times faster (the subprocess workers of tests/train and tests/reliability set the same), and
# one compilation cache per test session lets the session's processes (xdist workers, the
# training runs they start) load an executable another one compiled for the same program. Both
# are set before JAX starts; a fresh cache per session keeps the suite's time that of a clone.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()
_SESSION = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(tempfile.gettempdir()) / f"posejax-tests-jax-cache-{_SESSION}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
