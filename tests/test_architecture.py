"""The house's shape, checked: the import graph of ``xmlc/`` has no circle and no import that runs
back up the layers (a lazy import inside a function counts), no module is over 600 lines, no
function over 60, the training loop file is at most 400 lines, and the config has at most 60 keys."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "xmlc"

# Bottom to top. A module may import its own layer and the layers below; a package's own modules
# import their siblings directly, never the package (its __init__ only re-exports).
LAYERS = [
    ("base", ("xmlc.errors", "xmlc._json", "xmlc.kernels", "xmlc.cli")),
    ("data", ("xmlc.data",)),
    ("stats", ("xmlc.stats",)),
    ("components", ("xmlc.models", "xmlc.losses", "xmlc.optim")),
    ("eval", ("xmlc.eval",)),
    ("config", ("xmlc.config",)),
    ("run", ("xmlc.inference", "xmlc.run", "xmlc.checkpoint", "xmlc.recipe")),
    ("commands", ("xmlc.train", "xmlc.api", "xmlc.evaluate", "xmlc.predict", "xmlc.report", "xmlc.baseline",
                  "xmlc.stats.__main__", "xmlc")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(name: str) -> int:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best is not None, f"{name} is in no layer of tests/test_architecture.py"
    return best


def imports(name: str) -> set[str]:
    """The xmlc modules ``name`` imports, anywhere in the file (lazy imports included)."""
    path, out = MODULES[name], set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("xmlc"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("xmlc"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in MODULES else base)
    out.discard(name)
    return out


GRAPH = {name: imports(name) for name in MODULES}


def test_no_import_runs_back_up():
    up = [f"{a} (layer {LAYERS[layer(a)][0]}) imports {b} (layer {LAYERS[layer(b)][0]})"
          for a, targets in GRAPH.items() for b in targets if layer(b) > layer(a)]
    assert not up, "\n".join(up)


def test_no_circle():
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt in GRAPH and nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in GRAPH:
        if name not in state:
            visit(name)
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    limit = 400 if name == "xmlc.train.loop" else 600
    assert lines <= limit, f"{MODULES[name]} has {lines} lines (at most {limit})"


def test_function_size():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_config_keys():
    from xmlc.config import Config

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                yield from keys(tp, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name
    names = list(keys(Config))
    assert len(names) <= 60, f"{len(names)} config keys: {names}"
