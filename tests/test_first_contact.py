"""First contact on a fresh machine: declared dependencies, no Menagerie, no display, a clone named skillcell."""

import ast
import importlib.metadata as metadata
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from skillcell.cli import main

ROOT = Path(__file__).resolve().parents[1]
PEG = "skillcell/PegInsert-v0"
CAPTURE = ROOT / "examples" / "captures" / "peg_insertion.csv"


# ---------------------------------------------------------------- declared dependencies

def _declared() -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def _optional() -> list[Requirement]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    return [Requirement(r) for group in extras.values() for r in group]


def _installed_requirements(dist: str, extras: frozenset[str]) -> list[Requirement]:
    env = default_environment()
    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""}):
            out.append(req)
    return out


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution that installing ``requirements`` brings in, following installed metadata."""
    seen: dict[str, frozenset[str]] = {}
    stack = [(req.name, frozenset(req.extras)) for req in requirements]
    while stack:
        name, extras = stack.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | extras
        try:
            stack.extend((r.name, frozenset(r.extras)) for r in _installed_requirements(name, extras))
        except metadata.PackageNotFoundError:
            continue
    return set(seen)


def _distributions(top_level: str) -> set[str]:
    return {canonicalize_name(d) for d in metadata.packages_distributions().get(top_level, [])}


def _third_party(names) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in sys.builtin_module_names
            and n != "skillcell" and not n.startswith("__editable__")}


def _imports(source: str) -> dict[str, bool]:
    """Top-level names a module imports -> whether the module treats it as optional (``except ImportError``)."""
    tree = ast.parse(source)
    guarded_nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is not None and any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                           for n in ast.walk(h.type)) for h in node.handlers):
            guarded_nodes.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            out[top] = out.get(top, False) or id(node) in guarded_nodes
    return out


def test_every_import_of_the_package_is_a_declared_dependency():
    base = {canonicalize_name(r.name) for r in _declared()}
    extras = {canonicalize_name(r.name) for r in _optional()}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    modules = list(packages)
    for package in packages:
        locations = importlib.util.find_spec(package).submodule_search_locations
        modules += [m.name for m in pkgutil.iter_modules(locations, package + ".") if not m.ispkg]
    assert "skillcell.envs.cell" in modules and "skillcell.policies.train" in modules
    problems = []
    for name in modules:
        origin = importlib.util.find_spec(name).origin
        if not origin.endswith(".py"):
            continue  # a compiled extension (setup.py: skillcell.envs.kernels) imports no Python package
        for top, optional in _imports(Path(origin).read_text()).items():
            if top not in _third_party([top]):
                continue
            dists = _distributions(top)
            if optional and not dists:
                # An optional dependency that is not installed here has no distribution to look
                # up: it is declared when an extra names a distribution of the same name.
                dists = {canonicalize_name(top)}
            allowed = base | (extras if optional else set())
            if not dists & allowed:
                problems.append(f"{name} imports {top} ({', '.join(sorted(dists)) or 'no distribution'}), "
                                f"not declared in [project].dependencies"
                                + (" or an extra" if optional else ""))
    assert not problems, "\n".join(problems)


PROBE = r"""
import json, sys
before = set(sys.modules)
from skillcell.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
files = {}
for key in set(sys.modules) - before:  # Cython modules also register under a bare name: go by their spec
    spec = getattr(sys.modules[key], "__spec__", None)
    top = (spec.name if spec is not None else key).split(".")[0]
    files[top] = getattr(sys.modules.get(top), "__file__", None)
with open(sys.argv[2], "w") as f:
    json.dump({"codes": codes, "modules": files}, f)
"""


def test_the_default_commands_import_only_declared_dependencies(tmp_path):
    """The README's quick start (with its progress bars) and a capture import, in one process.

    A dependency of a dependency counts only if that one declares it without extras: SB3's progress
    bar needs rich, which SB3 lists in its [extra] only, and the test extras pull rich in besides.
    """
    commands = [["quickstart", "--episodes", "2", "--rl-steps", "64", "--gate-episodes", "1"],
                ["demos", "import", str(CAPTURE), "--out", str(tmp_path / "imported")]]
    out = tmp_path / "probe.json"
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands), str(out)], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(out.read_text())
    assert probe["codes"] == [0, 0], result.stdout[-2000:] + result.stderr[-2000:]
    # Modules with a file in an installed location; extension modules register helper names with no file.
    prefixes = tuple(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    imported = _third_party({top for top, file in probe["modules"].items() if file and file.startswith(prefixes)})
    assert {"rich", "mink", "stable_baselines3", "torch"} <= imported  # what the check is about is exercised
    installed = _closure(_declared())
    undeclared = {top: sorted(_distributions(top)) for top in imported if not _distributions(top) & installed}
    assert not undeclared, f"imported but not brought in by skillcell's dependencies: {undeclared}"


# ---------------------------------------------------------------- no Menagerie

COMMANDS = {
    "check": ["check", PEG, "--steps", "5"],
    "expert": ["expert", PEG, "--episodes", "1", "--no-progress"],
    "quickstart": ["quickstart", "--no-progress"],
    "train": ["train", "--config", str(ROOT / "examples" / "train_peg_insert.yaml"), "--out", "{tmp}/run",
              "--no-progress"],
    "gate": ["gate", "scripted", "--env", PEG, "--out", "{tmp}/gate", "--no-progress"],
    "render": ["render", "expert", "--env", PEG, "--out", "{tmp}/video.mp4", "--no-progress"],
    "demos generate": ["demos", "generate", PEG, "--episodes", "1", "--out", "{tmp}/demos", "--no-progress"],
    "demos import": ["demos", "import", str(CAPTURE), "--out", "{tmp}/imported", "--no-progress"],
}


def _run_without_menagerie(argv, tmp_path, capsys):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    return code, err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_missing_menagerie_root_is_one_line_and_exit_2(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MENAGERIE_ROOT", str(tmp_path / "no-such-folder"))
    code, err = _run_without_menagerie(COMMANDS[command], tmp_path, capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"MENAGERIE_ROOT={tmp_path / 'no-such-folder'} has no folder universal_robots_ur5e/" in err
    assert "point MENAGERIE_ROOT at a copy of the Menagerie" in err


def test_offline_without_menagerie_root_says_to_set_it(tmp_path, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.delenv("MENAGERIE_ROOT")
    monkeypatch.setenv("MENAGERIE_CACHE_DIR", str(tmp_path_factory.mktemp("empty-cache")))
    monkeypatch.setenv("MENAGERIE_BASE_URL", (tmp_path / "unreachable").as_uri())  # a download that fails at once
    code, err = _run_without_menagerie(COMMANDS["expert"], tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "offline, set MENAGERIE_ROOT to a copy of the Menagerie model folders" in err
    assert "MENAGERIE_ROOT=../shared/menagerie" in err


def test_the_installed_command_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "skillcell", "expert", PEG, "--episodes", "1"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "MENAGERIE_ROOT": str(tmp_path / "missing")})
    assert result.returncode == 2
    assert result.stderr.startswith("skillcell: cannot load the Menagerie robot") and result.stderr.count("\n") == 1


# ---------------------------------------------------------------- no display

def _headless_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    return {**env, **extra}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="EGL is the Linux headless backend")
def test_without_a_display_mujoco_renders_through_egl(tmp_path):
    probe = "import os, skillcell, mujoco; print(os.environ.get('MUJOCO_GL'))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_headless_env(),
                          check=True).stdout.strip() == "egl"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=_headless_env(DISPLAY=":0"), check=True).stdout.strip() == "None"  # left to MuJoCo

    video = tmp_path / "expert.mp4"
    result = subprocess.run([sys.executable, "-m", "skillcell", "render", "expert", "--env", PEG, "--out", str(video),
                             "--max-steps", "3", "--width", "160", "--height", "128", "--no-progress"],
                            capture_output=True, text=True, timeout=300, env=_headless_env())
    assert result.returncode == 0, result.stderr
    assert "GLFW" not in result.stderr and video.stat().st_size > 0


# ---------------------------------------------------------------- a clone named skillcell

SCRIPT = """
import gymnasium as gym
import skillcell
env = gym.make("skillcell/PegInsert-v0")
obs, _ = env.reset(seed=0)
print(env.observation_space.contains(obs), skillcell.__file__)
"""


def test_a_script_beside_a_clone_named_skillcell_gets_the_installed_package(tmp_path):
    clone = tmp_path / "skillcell"  # what `git clone .../skillcell` makes: no __init__.py at its root
    clone.mkdir()
    (clone / "pyproject.toml").write_text("")
    (tmp_path / "script.py").write_text(SCRIPT)
    for argv in ([sys.executable, "script.py"], [sys.executable, "-c", SCRIPT]):
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("True "), result.stdout


def test_python_m_skillcell_works_from_the_clone_root():
    result = subprocess.run([sys.executable, "-m", "skillcell", "list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert PEG in result.stdout
