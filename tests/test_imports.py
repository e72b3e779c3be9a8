"""The package's import graph (issue 13): no circles among module-level imports, no import that
runs back up the layers of docs/architecture.md, and no import inside a function but of an
optional dependency (one that `pip install jackpot` does not bring)."""
import ast
import sys
from pathlib import Path

import jackpot

ROOT = Path(jackpot.__file__).parent

# The layers of docs/architecture.md, lowest first: a module may import its own layer and those
# below. The longest matching prefix decides (jackpot.launch.ddp sits below the other launchers).
LAYERS = {
    "jackpot.errors": 0, "jackpot.files": 0, "jackpot.config": 0, "jackpot.progress": 0,
    "jackpot.data": 1, "jackpot.models": 1,
    "jackpot.sparse": 2, "jackpot.flops": 2,
    "jackpot.train": 3, "jackpot.store": 3, "jackpot.sweep_record": 3, "jackpot.launch.ddp": 3,
    "jackpot.procedures": 4,
    "jackpot.analysis": 5, "jackpot.export": 5,
    "jackpot.launch": 6, "jackpot.recipes": 6, "jackpot.cli": 6, "jackpot.demo": 6,
}
# Imported inside the function that needs them: absent unless their extra is installed
# (sklearn: digits; ray; submitit: slurm; tensorboard and wandb: --log, report --tensorboard).
OPTIONAL = {"sklearn", "ray", "submitit", "torch.utils.tensorboard", "wandb"}


def layer(mod: str) -> int:
    if mod == "jackpot":
        return 99  # the package itself imports every procedure (registration): the top
    keys = [k for k in LAYERS if mod == k or mod.startswith(k + ".")]
    assert keys, f"{mod} has no layer in tests/test_imports.py LAYERS (add it where it belongs)"
    return LAYERS[max(keys, key=len)]


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def targets(mod: str, is_pkg: bool, node, known) -> set[str]:
    """jackpot modules an import statement loads (a `from . import x` of a submodule is that
    submodule, not the package it sits in)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    subs = {f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in known}
    rest = [a for a in node.names if f"{name}.{a.name}" not in known]
    return subs | ({name} if rest and name in known else set())


def graph():
    """(module -> jackpot modules it imports at module level, module -> [lazy imports as text])."""
    known = modules()
    edges, lazy = {}, {}
    for mod, path in known.items():
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body]
        for block in tree.body:  # imports guarded by if/try at module level still run at import time
            if isinstance(block, (ast.If, ast.Try)):
                top += list(ast.walk(block))
        top_ids = {id(n) for n in top}
        edges[mod] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) not in top_ids:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                relative = isinstance(node, ast.ImportFrom) and node.level
                if relative or not all(any(n == o or n.startswith(o + ".") for o in OPTIONAL) for n in names):
                    lazy.setdefault(mod, []).append(ast.unparse(node))
                continue
            found = targets(mod, path.name == "__init__.py", node, known) - {mod}
            # a submodule importing its own package (or a sibling through it) is no cycle
            edges[mod] |= {t for t in found if not mod.startswith(t + ".")}
    return edges, lazy


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_module_level_imports_form_no_circle():
    edges, _ = graph()
    assert len(edges) > 60  # the walk sees the whole package and its edges
    assert {"jackpot.procedures.context", "jackpot.procedures.registry"} <= edges["jackpot.procedures.lottery"]
    assert cycles(edges) == []


def test_a_planted_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_inside_a_function_but_of_optional_dependencies():
    _, lazy = graph()
    assert lazy == {}, f"imports inside functions (move them to the top of the module): {lazy}"


def test_no_import_runs_back_up_the_layers():
    edges, _ = graph()
    upward = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                    for m, targets_ in edges.items() for t in targets_ if layer(t) > layer(m))
    assert upward == []


def test_the_checks_see_lazy_and_upward_imports(tmp_path, monkeypatch):
    """The walk itself: a planted function-level import and an upward import are both found."""
    pkg = tmp_path / "jackpot"
    (pkg / "sparse").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from .sparse import masks\n\ndef f():\n    import ray\n    from . import config\n")
    (pkg / "config.py").write_text("")
    (pkg / "sparse" / "__init__.py").write_text("")
    (pkg / "sparse" / "masks.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)
    edges, lazy = graph()
    assert lazy == {"jackpot.errors": ["from . import config"]}  # ray is optional
    assert edges["jackpot.errors"] == {"jackpot.sparse.masks"}
    assert layer("jackpot.errors") < layer("jackpot.sparse.masks")


def test_every_module_has_a_layer():
    for mod in modules():
        layer(mod)
