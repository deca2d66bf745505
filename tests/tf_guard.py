"""``no_tensorflow_import()``: assert that a block of code never imports TensorFlow."""

import contextlib
import importlib.abc
import sys


class _RecordTensorflowImports(importlib.abc.MetaPathFinder):
    """Records every attempt to import tensorflow. ``importlib.util.find_spec`` probes (etils
    asks whether TF is installed) are not imports and are let through."""

    def __init__(self):
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "tensorflow" or fullname.startswith("tensorflow."):
            frame = sys._getframe(1)
            while frame is not None:
                code = frame.f_code
                if code.co_name == "find_spec" and "importlib.util" in code.co_filename:
                    return None
                frame = frame.f_back
            self.attempts.append(fullname)
        return None


@contextlib.contextmanager
def no_tensorflow_import():
    finder = _RecordTensorflowImports()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
    assert not finder.attempts, f"tensorflow import attempted: {finder.attempts}"
    assert "tensorflow" not in sys.modules
