"""The declared top-level folders install as one import package, and nothing else sneaks in."""

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_folder_is_a_listed_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = {package: folder for package, folder in config["package-dir"].items()}
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == listed


def test_importing_the_envs_folder_directly_is_refused():
    result = subprocess.run([sys.executable, "-c", "import envs"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "import skillcell.envs" in result.stderr


def test_assets_ship_with_the_package():
    from skillcell import assets

    for relative in (("cells", "peg_insert", "scene.xml"), ("cells", "peg_insert", "cell.yaml"),
                     ("tools", "peg_tool", "tool.xml")):
        assert assets.path(*relative).is_file()
