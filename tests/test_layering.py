"""Dependencies inside ``posejax`` point one way: a module never imports a higher layer.

Every ``import posejax.X`` and ``from posejax.X import ...`` under ``posejax/`` counts, at the
top of a module or inside a function (a lazy import is still a dependency). Each module belongs
to a *unit*: a subpackage (``posejax.data``), a top-level module (``posejax.skeleton``) or the
package root (``posejax/__init__.py``). :data:`LAYERS` gives every unit its layer; a unit may
import its own layer or lower ones, and no two units may import each other. A new subpackage
or top-level module fails :func:`test_every_unit_has_a_layer` until it is given a layer here.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "posejax"

# The layer table (lower layers never import higher ones).
LAYERS = {
    # 0: leaves: conventions and helpers that know nothing of data, models or runs. The
    # package root only applies the XLA defaults.
    "posejax": 0,
    "posejax.skeleton": 0,
    "posejax.geometry": 0,
    "posejax.xla_flags": 0,
    "posejax.hydra_resolvers": 0,
    "posejax.subpixel": 0,  # sub-pixel peak refinement, shared by formulations and parsing
    "posejax.kernels": 0,  # native CPU kernels (XLA FFI), called by the models
    # 1: datasets, the grain pipeline, split opening (duck-typed DataConfig, no run set-up).
    "posejax.data": 1,
    # 2: the networks, and bottom-up parsing (NumPy on decoded maps).
    "posejax.models": 2,
    "posejax.parsing": 2,
    # 3: the formulations (encode, head, loss, decode); PAF decoding calls parsing.
    "posejax.formulations": 3,
    # 4: what a run is made of (config edge, state, optimizer, checkpoints) and how to restore it.
    "posejax.runs": 4,
    # 5: metrics and the evaluator.
    "posejax.evaluation": 5,
    # 6: runners, drawing and the predict CLI. Above evaluation, not beside it: the predict CLI
    # writes its detections with evaluation.coco_metrics, the results format the evaluator
    # scores. The evaluator never imports inference.
    "posejax.inference": 6,
    # 7: the training loop (it evaluates, and draws its visuals with inference.draw).
    "posejax.train": 7,
    # 8: experiment tools and the command lines on top of everything.
    "posejax.experiments": 8,
    "posejax.evaluate": 8,
    "posejax.predict": 8,
}


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement of a posejax module naming another posejax module."""

    path: Path  # the importing file
    line: int
    source: str  # the statement as written
    importer: str  # dotted module name of the file
    imported: str  # dotted module name it imports (possibly a name inside it)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``posejax/data/splits.py`` -> ``posejax.data.splits``; ``__init__.py`` names its package."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """``posejax.data.splits`` -> ``posejax.data``; ``posejax`` stays ``posejax``."""
    return ".".join(module.split(".")[:2])


def posejax_imports(path: Path, text: str, importer: str) -> list[Import]:
    """Every ``posejax`` import of one module, at any depth (functions included)."""
    tree = ast.parse(text, filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = importer.split(".")
                anchor = anchor[: len(anchor) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # ``from posejax import skeleton`` imports the module posejax.skeleton.
            names = [f"{base}.{alias.name}" if base == "posejax" else base for alias in node.names]
        else:
            continue
        source = ast.get_source_segment(text, node) or ""
        for name in names:
            if name == "posejax" or name.startswith("posejax."):
                found.append(Import(path, node.lineno, source, importer, name))
    return found


def all_imports(package: Path = PACKAGE) -> list[Import]:
    imports = []
    for path in sorted(package.rglob("*.py")):
        imports += posejax_imports(path, path.read_text(), module_name(path, package))
    return imports


def imported_unit(imp: Import) -> str:
    unit = unit_of(imp.imported)
    # ``from posejax import something_else`` (a name of the root, not a module) is the root.
    return unit if unit in LAYERS else "posejax"


def where(imp: Import) -> str:
    """``path:line `statement``` of one import, the path relative to the repository."""
    path = imp.path.relative_to(ROOT) if imp.path.is_relative_to(ROOT) else imp.path
    return f"{path}:{imp.line} `{imp.source}`"


def layer_violations(imports: list[Import]) -> list[str]:
    """One line per import of a higher layer: file, line, the statement and the two layers."""
    problems = []
    for imp in imports:
        src, dst = unit_of(imp.importer), imported_unit(imp)
        if src == dst or src not in LAYERS:
            continue
        if LAYERS[dst] > LAYERS[src]:
            problems.append(
                f"{where(imp)}: {src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]})"
            )
    return list(dict.fromkeys(problems))  # ``from a import b, c`` once, not per name


def mutual_imports(imports: list[Import]) -> list[str]:
    """One line per pair of units importing each other, with one import of each direction."""
    first: dict[tuple[str, str], Import] = {}
    for imp in imports:
        edge = (unit_of(imp.importer), imported_unit(imp))
        if edge[0] != edge[1]:
            first.setdefault(edge, imp)
    problems = []
    for (a, b), imp in sorted(first.items()):
        back = first.get((b, a))
        if a < b and back is not None:
            problems.append(f"{a} <-> {b}: {where(imp)} and {where(back)}")
    return problems


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(units - set(LAYERS))
    assert not missing, f"give these a layer in tests/test_layering.py LAYERS: {missing}"


def test_no_module_imports_a_higher_layer():
    problems = layer_violations(all_imports())
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_no_two_units_import_each_other():
    problems = mutual_imports(all_imports())
    assert not problems, "units importing each other:\n" + "\n".join(problems)


def test_the_checks_catch_a_lazy_upward_import_and_a_cycle(tmp_path):
    # The checks themselves, on a small fake tree: a lazy import inside a function counts.
    package = tmp_path / "posejax"
    (package / "parsing").mkdir(parents=True)
    (package / "formulations").mkdir()
    (package / "parsing" / "peaks.py").write_text(
        "import numpy as np\n\n\ndef f():\n    from posejax.formulations.common import g\n"
    )
    (package / "formulations" / "paf.py").write_text("from posejax.parsing import peaks\n")
    (package / "formulations" / "heatmap.py").write_text(
        "from . import paf\nfrom posejax import x\n"
    )
    imports = all_imports(package)
    assert {(imp.importer, imp.imported) for imp in imports} == {
        ("posejax.parsing.peaks", "posejax.formulations.common"),
        ("posejax.formulations.paf", "posejax.parsing"),
        ("posejax.formulations.heatmap", "posejax.formulations"),
        ("posejax.formulations.heatmap", "posejax.x"),
    }
    # The relative import stays inside its unit, and ``posejax.x`` (no unit) is the root.
    peaks = package / "parsing" / "peaks.py"
    assert layer_violations(imports) == [
        f"{peaks}:5 `from posejax.formulations.common import g`: posejax.parsing (layer 2) "
        "imports posejax.formulations (layer 3)"
    ]
    assert mutual_imports(imports) == [
        f"posejax.formulations <-> posejax.parsing: {package / 'formulations' / 'paf.py'}:1 "
        f"`from posejax.parsing import peaks` and {peaks}:5 "
        "`from posejax.formulations.common import g`"
    ]
