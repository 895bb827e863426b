"""The import graph points one way. Every module's imports, module level and function level, are read
with `ast` (nothing is imported), and checked against one table of layers, bottom to top:

======  ==================  =======================================================================
rank    layer               modules
======  ==================  =======================================================================
0       base                skillcell.config, skillcell.paths, skillcell.atomic, skillcell.mp4,
                            skillcell.parallel, skillcell.assets
1       envs                skillcell.envs.*, skillcell (the package: registers the cells),
                            skillcell.checks, skillcell.rollout, skillcell.evaluation
2       demos               skillcell.demos.*
3       policies            skillcell.policies.*
4       review | deploy     skillcell.review.* | skillcell.deploy.* (side by side: neither imports
                            the other)
5       teleop              skillcell.teleop.* (an operator records demonstrations, with a review view)
6       cli                 skillcell.cli.*, skillcell.__main__
======  ==================  =======================================================================

A module imports its own layer and lower ranks only. Besides:

- no module imports another module's underscore names (``from x import _y``, ``x._y``) or a private
  module (``skillcell.demos._io``) from outside its package;
- an import inside a function defers a heavy or optional dependency (`DEFERRED`: torch, SB3, ONNX,
  mink, SciPy, matplotlib, the dataset formats, imageio, Ray, platform-only modules) or a first-party
  module that imports one at its top level; every other import is at module top;
- there is no import cycle among the CLI modules, nor anywhere else.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

#: (name, rank, module prefixes); a module belongs to the entry of its longest matching prefix
LAYERS = [
    ("base", 0, ("skillcell.config", "skillcell.paths", "skillcell.atomic", "skillcell.mp4", "skillcell.parallel",
                 "skillcell.assets")),
    ("envs", 1, ("skillcell.envs", "skillcell", "skillcell.checks", "skillcell.rollout", "skillcell.evaluation")),
    ("demos", 2, ("skillcell.demos",)),
    ("policies", 3, ("skillcell.policies",)),
    ("review", 4, ("skillcell.review",)),
    ("deploy", 4, ("skillcell.deploy",)),
    ("teleop", 5, ("skillcell.teleop",)),
    ("cli", 6, ("skillcell.cli", "skillcell.__main__")),
]

#: what an import inside a function may defer: heavy or optional third-party packages, platform-only modules
DEFERRED = frozenset({
    "torch", "stable_baselines3", "onnx", "onnxruntime", "onnxscript", "mink", "qpsolvers", "matplotlib",
    "scipy", "minari", "h5py", "pyarrow", "pandas", "datasets", "lerobot", "imageio", "imageio_ffmpeg", "ray",
    "pyspacemouse",
    "mujoco.viewer", "glfw", "fcntl", "termios", "tty", "msvcrt",
})


def _deferrable(target: str) -> bool:
    return any(target == d or target.startswith(d + ".") for d in DEFERRED)


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, from pyproject's package folders."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = config["package-dir"]
    modules = {}
    for package in config["packages"]:
        top = max((p for p in folders if package == p or package.startswith(p + ".")), key=len)
        folder = ROOT / folders[top] / Path(*package.split(".")[len(top.split(".")):])
        # A C source there is a compiled extension (setup.py): a leaf that imports no first-party module.
        for file in [*folder.glob("*.py"), *folder.glob("*.c")]:
            name = package if file.stem == "__init__" else f"{package}.{file.stem}"
            modules[name] = file
    return modules


MODULES = _modules()


def _first_party(name: str) -> str | None:
    """The module that an import of ``name`` executes last (a name inside a module is that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


class _Import:
    def __init__(self, target: str, line: int, deferred: bool, optional: bool, names: tuple[str, ...] = ()):
        self.target, self.line, self.deferred, self.optional, self.names = target, line, deferred, optional, names


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds):
            return True
    return False


@cache
def _imports(module: str) -> tuple[_Import, ...]:
    """Every import statement of ``module``: absolute target, line, inside a function?, under try/ImportError?"""
    if MODULES[module].suffix == ".c":
        return ()
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].stem == "__init__" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, deferred: bool, optional: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, optional)
            elif isinstance(child, ast.Try):
                catches = _catches_import_error(child)
                for part in child.body:
                    visit(ast.Module(body=[part], type_ignores=[]), deferred, optional or catches)
                for part in (*child.handlers, *child.orelse, *child.finalbody):
                    visit(part, deferred, optional)
            elif isinstance(child, ast.Import):
                found.extend(_Import(a.name, child.lineno, deferred, optional) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join([*package.split(".")[:len(package.split(".")) - child.level + 1], base]).strip(".")
                if base == "__future__":
                    continue
                for a in child.names:
                    full = f"{base}.{a.name}"
                    target = full if full in MODULES else base
                    names = () if full in MODULES else (a.name,)
                    found.append(_Import(target, child.lineno, deferred, optional, names))
            else:
                visit(child, deferred, optional)

    visit(tree, False, False)
    return tuple(found)


def _entry(module: str) -> tuple[str, int]:
    best = None
    for name, rank, prefixes in LAYERS:
        for prefix in prefixes:
            exact = prefix == "skillcell"  # the package itself, not everything under it
            if module == prefix or (not exact and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), name, rank)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return best[1], best[2]


def _executed(target: str) -> list[str]:
    """The first-party modules an import of ``target`` runs: its parent packages, then it."""
    module = _first_party(target)
    if module is None:
        return []
    parts = module.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in MODULES]


@cache
def _heavy(module: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether importing ``module`` imports a `DEFERRED` package at some module's top level."""
    for imp in _imports(module):
        if imp.deferred or imp.optional:
            continue
        if _deferrable(imp.target):
            return True
        for other in _executed(imp.target):
            if other != module and other not in seen and _heavy(other, seen | {module}):
                return True
    return False


def _edges(prefix: str = "skillcell") -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES if m == prefix or m.startswith(prefix + ".")}
    for module in graph:
        for imp in _imports(module):
            target = _first_party(imp.target)
            if target in graph and target != module:
                graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _where(module: str, imp: _Import) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{imp.line}"


def test_the_package_is_found():
    assert {"skillcell", "skillcell.envs.base", "skillcell.cli", "skillcell.deploy.gate"} <= set(MODULES)


def test_imports_point_down_the_layers():
    wrong = []
    for module in sorted(MODULES):
        name, rank = _entry(module)
        for imp in _imports(module):
            target = _first_party(imp.target)
            if target is None or target == module:
                continue
            other, other_rank = _entry(target)
            if other_rank > rank or (other_rank == rank and other != name):
                wrong.append(f"{_where(module, imp)}: {module} ({name}) imports {target} ({other})")
    assert wrong == []


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to first-party modules (``import skillcell.x as m``, ``from skillcell import x``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in MODULES})
    return aliases


def test_no_module_reaches_into_another_modules_underscore_names():
    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    wrong = []
    for module in sorted(MODULES):
        for imp in _imports(module):
            target = _first_party(imp.target)
            if target is None or target == module:
                continue
            owner = target.rpartition(".")[0]
            if any(map(private, target.split("."))) and not (module == owner or module.startswith(owner + ".")):
                wrong.append(f"{_where(module, imp)}: {module} imports the private module {target}")
            wrong += [f"{_where(module, imp)}: {module} imports {target}.{n}" for n in imp.names if private(n)]
        if MODULES[module].suffix == ".c":
            continue
        tree = ast.parse(MODULES[module].read_text())
        aliases = _module_aliases(tree)
        wrong += [f"{MODULES[module].relative_to(ROOT)}:{node.lineno}: {module} reads "
                  f"{aliases[node.value.id]}.{node.attr}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in aliases and private(node.attr)]
    assert wrong == []


def test_imports_inside_functions_only_defer_heavy_or_optional_dependencies():
    wrong = {}
    for module in sorted(MODULES):
        for imp in _imports(module):
            if not imp.deferred or imp.optional or _deferrable(imp.target):
                continue
            target = _first_party(imp.target)
            if target is not None and any(_heavy(m) for m in _executed(imp.target)):
                continue
            wrong.setdefault(_where(module, imp), f"{_where(module, imp)}: {module} imports {imp.target} inside a "
                                                  "function; move it to the top (only heavy or optional "
                                                  "dependencies are deferred)")
    assert list(wrong.values()) == []


def test_no_import_cycle_among_the_cli_modules():
    graph = _edges("skillcell.cli")
    assert len(graph) > 1
    assert _cycle(graph) is None


def test_no_import_cycle_anywhere():
    assert _cycle(_edges()) is None


def test_the_checks_see_heavy_modules_and_private_names():
    """The rules above are not vacuous: SB3 is heavy through the training module, a private module is private."""
    assert _heavy("skillcell.policies.train") and not _heavy("skillcell.config")
    assert _entry("skillcell.demos._io") == ("demos", 2) and _entry("skillcell") == ("envs", 1)
    assert any(imp.deferred for m in MODULES for imp in _imports(m))
