"""Cell YAML: every mistake names its key; user files and overrides layer over the packaged cell."""

import textwrap

import pytest

from skillcell.config import ConfigError, from_mapping, load_yaml, merge
from skillcell.envs.cells.peg_insert import PegInsertConfig, PegInsertEnv


@pytest.mark.parametrize("overrides,message", [
    ({"workpiece": {"clearence_mm": 0.2}}, r"workpiece\.clearence_mm: unknown key"),
    ({"robott": {}}, r"robott: unknown key"),
    ({"workpiece": {"clearance_mm": "wide"}}, r"workpiece\.clearance_mm: expected a number"),
    ({"workpiece": {"clearance_mm": float("nan")}}, r"workpiece\.clearance_mm: must be finite"),
    ({"workpiece": {"clearance_mm": 2.0}}, r"workpiece\.clearance_mm: must be in \[0\.1, 1\.0\]"),
    ({"randomization": {"hole_pos_mm": [1, 2]}}, r"randomization\.hole_pos_mm: expected 3 values"),
    ({"randomization": {"hole_rot_deg": [1, 2, 99]}}, r"randomization\.hole_rot_deg: must be in"),
    ({"task": {"terminate_on_success": "yes"}}, r"task\.terminate_on_success: expected true or false"),
    ({"control": {"control_hz": 30}}, r"control\.control_hz: .*whole number"),
    ({"control": {"workspace_min_m": [1, 1, 1]}}, r"control\.workspace_min_m"),
    ({"workpiece": {"block_size_mm": 20}}, r"workpiece\.block_size_mm"),
    ({"robot": {"menagerie": "no_such_robot"}}, r"robot\.menagerie"),
    ({"robot": {"flange_site": "nowhere"}}, r"robot\.flange_site"),
    ({"tool": {"mjcf": "tools/missing/tool.xml"}}, r"tool\.mjcf: file not found"),
    ({"tool": {"tcp_site": "tip"}}, r"tool\.tcp_site"),
    ({"scene": "cells/nowhere/scene.xml"}, r"scene: file not found"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PegInsertEnv(overrides=overrides)


def test_packaged_yaml_documents_every_key():
    """The packaged cell.yaml is the reference a user copies: it must load strictly and show every key."""
    from skillcell import assets
    from skillcell.config import to_mapping

    data = load_yaml(assets.path("cells", "peg_insert", "cell.yaml"))
    config = from_mapping(PegInsertConfig, data)

    def keys(mapping, prefix=""):
        out = set()
        for key, value in mapping.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, prefix + key + ".")
        return out

    assert keys(data) == keys(to_mapping(config))


def test_user_yaml_with_relative_scene(tmp_path):
    from skillcell import assets

    scene = (assets.path("cells", "peg_insert", "scene.xml")).read_text()
    (tmp_path / "my_scene.xml").write_text(scene.replace('fovy="40"', 'fovy="55"'))
    cell = tmp_path / "tight.yaml"
    cell.write_text(textwrap.dedent("""
        scene: my_scene.xml
        workpiece:
          clearance_mm: 0.15
          chamfer_mm: 0.5
    """))
    env = PegInsertEnv(cell=str(cell), overrides={"workpiece": {"chamfer_mm": 0.3}})
    assert env.config.workpiece.clearance_mm == 0.15
    assert env.config.workpiece.chamfer_mm == 0.3  # overrides win over the file
    assert env.model.cam_fovy[env.model.camera("overview").id] == pytest.approx(55)


def test_broken_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workpiece: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PegInsertEnv(cell=str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        PegInsertEnv(cell=str(listy))
    with pytest.raises(ConfigError, match="no such config file"):
        PegInsertEnv(cell=str(tmp_path / "missing.yaml"))


def test_merge_is_recursive_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    out = merge(base, {"a": {"b": 10}})
    assert out == {"a": {"b": 10, "c": 2}, "d": 3}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_fixture_pose_comes_from_the_yaml():
    from skillcell.policies import make_expert

    env = PegInsertEnv(overrides={"fixture": {"pos_m": [0.42, 0.05, 0.93], "euler_deg": [0, 0, 30]}},
                       randomize=False)
    obs, _ = env.reset(seed=0)
    assert env.data.site_xpos[env.task_site] == pytest.approx([0.42, 0.05, 0.93])
    # The start pose follows the fixture, and the expert still inserts.
    assert env.decode_obs(obs)["tcp_pos_task"] == pytest.approx([0, 0, 0.04], abs=1e-6)
    expert = make_expert(env)
    for _ in range(200):
        obs, _, terminated, _, info = env.step(expert(obs))
        if terminated:
            break
    assert info["is_success"]
