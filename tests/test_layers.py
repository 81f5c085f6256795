"""The package's imports flow one way: the core, then evaluation/ -> experiments/ (one run) -> reports/ ->
reproduction/ (the paper's protocol) -> cli/. Checked on the source (every import, also those inside
functions) and by importing each layer with the layers above it blocked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mdpt"
LAYERS = ("evaluation", "experiments", "reports", "reproduction", "cli")  # bottom to top, above the core
MAX_LINES = 500


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    """0 for the core (data, nets, diffusion, guidance, policies, training, agent, artifacts, the leaves);
    1.. for the layers above it; `mdpt.__main__` belongs to the command line."""
    parts = module.split(".")
    if module == "mdpt.__main__":
        return len(LAYERS)
    return LAYERS.index(parts[1]) + 1 if len(parts) > 1 and parts[1] in LAYERS else 0


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) of every mdpt import in a file. The package root
    (`mdpt`, whose lazy names are the public facade and whose `__version__` every layer may read) is no
    layer and is left out."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("mdpt.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mdpt"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in MODULES:  # `from mdpt.x import module`
                    out.append((sub, None, node.lineno))
                elif node.module != "mdpt":
                    out.append((node.module, a.name, node.lineno))
    return out


GRAPH = {m: sorted({imp for imp, _, _ in _imports(p)}) for m, p in MODULES.items() if m != "mdpt"}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} imports {imp} (line {line})" for m, p in MODULES.items() if m != "mdpt"
              for imp, _, line in _imports(p) if _layer(imp) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_nothing_outside_the_command_line_imports_it():
    into_cli = [m for m, deps in GRAPH.items() if _layer(m) < len(LAYERS) and any(d.startswith("mdpt.cli") for d in deps)]
    assert not into_cli


def test_no_private_name_is_imported_from_another_module():
    private = [f"{m}: from {imp} import {name}" for m, p in MODULES.items() for imp, name, _ in _imports(p)
               if name and name.startswith("_") and imp != m]
    assert not private, "\n".join(private)


def test_the_imports_form_no_circle():
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in GRAPH.get(m, []):
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d in GRAPH and not state.get(d):
                visit(d, stack + [d])
        state[m] = 2

    for m in GRAPH:
        if not state.get(m):
            visit(m, [m])
    assert not circles, "\n".join(circles)


BLOCKER = """
import importlib.abc, importlib.util, pkgutil, sys
blocked = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"{{name}} is above the layer being imported")
        return None
sys.meta_path.insert(0, Block())
import mdpt.{layer} as layer
for info in pkgutil.walk_packages(layer.__path__, "mdpt.{layer}."):
    importlib.import_module(info.name)
print("ok")
"""


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_each_layer_imports_without_the_layers_above_it(layer):
    blocked = [f"mdpt.{x}" for x in LAYERS[LAYERS.index(layer) + 1:]]
    run = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked, layer=layer)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_no_file_is_over_500_lines():
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long
