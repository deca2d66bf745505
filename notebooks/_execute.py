"""``make notebooks``: execute every notebook on a sweep and write its ``.ipynb`` with outputs.

``python notebooks/_execute.py [--runs results/quick/runs]`` (a leading ``_``: a helper, not a
notebook). Each ``notebooks/<name>.py``
(jupytext percent script, the source of truth) is executed top to bottom with this interpreter's
kernel and written to ``notebooks/<name>.ipynb`` with its outputs, so that a reader browsing the
repository sees the plots of the committed quick comparison without running anything. The sweep
is passed through ``POSEJAX_RUNS``, as the notebooks expect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "posejax-notebooks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/quick/runs", help="the sweep (POSEJAX_RUNS)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    runs = Path(args.runs)  # relative: to the repository root, the kernels' working directory
    if not (runs if runs.is_absolute() else ROOT / runs).is_dir():
        raise SystemExit(f"notebooks: no sweep at {runs} (run `make compare` first)")
    os.environ["POSEJAX_RUNS"] = str(runs)
    with tempfile.TemporaryDirectory() as jupyter_path:
        spec = Path(jupyter_path) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        argv_kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv_kernel, "display_name": "posejax", "language": "python"})
        )
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [jupyter_path, os.environ.get("JUPYTER_PATH")])
        )
        for script in sorted((ROOT / "notebooks").glob("[!_]*.py")):
            notebook = jupytext.read(script)
            client = nbclient.NotebookClient(
                notebook,
                kernel_name=KERNEL,
                timeout=args.timeout,
                resources={"metadata": {"path": str(ROOT)}},
            )
            client.execute()
            notebook.metadata.pop("kernelspec", None)  # the temporary kernel's name
            out = script.with_suffix(".ipynb")
            nbformat.write(notebook, out)
            print(f"wrote {out.relative_to(ROOT)} (executed on {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
