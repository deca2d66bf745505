"""``python -m posejax.predict RUN_DIR IMAGES...``: see :mod:`posejax.inference.predict`."""

import sys

from posejax.inference.predict import main

if __name__ == "__main__":
    sys.exit(main())
