"""The package's imports run one way: backend (and kernels) -> random -> autograd -> ops -> nn, optim, data ->
distributed -> training -> the commands. A module importing from a layer above it (ops from
autograd, distributed from nn, training from distributed, ...) fails here, naming both."""
import ast
import pathlib

import distbp

LAYERS = [("backend", "_process", "_env", "kernels"), ("random",), ("autograd",), ("ops", "gradcheck"), ("nn", "optim", "data"),
          ("distributed",), ("training",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
COMMANDS = len(LAYERS)  # train, bench, doctor, search, equivalence, plot: may import anything


def _layer(module: str) -> int:
    return RANK.get(module.split(".")[0], COMMANDS)


def _imports(path: pathlib.Path, package: list) -> list:
    """The distbp modules `path` imports, as dotted paths inside distbp."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            found += ([".".join(base + node.module.split("."))] if node.module
                      else [".".join(base + [a.name]) for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distbp"):
            found += ([node.module[len("distbp."):]] if node.module != "distbp" else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found += [a.name[len("distbp."):] for a in node.names if a.name.startswith("distbp.")]
    return found


def upward_imports(root: pathlib.Path) -> list:
    """(module, what it imports) for every import that points to a higher layer."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts == ["__init__"]:
            continue  # the package's front door re-exports every layer
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        me = ".".join(parts)
        bad += [(me, t) for t in _imports(path, package) if _layer(t) > _layer(me)]
    return bad


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(pathlib.Path(distbp.__file__).parent) == []


def test_the_check_finds_an_upward_import(tmp_path):
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "fancy.py").write_text("from ..nn import Linear\nfrom .. import backend\n")
    (tmp_path / "nn").mkdir()
    (tmp_path / "nn" / "layer.py").write_text("import distbp.distributed.comm\nfrom distbp.ops import add\n")
    assert upward_imports(tmp_path) == [("nn.layer", "distributed.comm"), ("ops.fancy", "nn")]
