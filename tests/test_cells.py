"""What every registered cell must have, checked by looping over the cell registry.

A cell added with one `register_cell` line is covered here without touching this file: its expert
succeeds at D0, its scorer scores that episode in [0, 1], its tiers, envelope and criteria load,
the KPIs its criteria and review name are in ``info``, and its docstring documents its spaces.
(`tests/test_envs.py` runs the Gymnasium and SB3 checkers and the determinism checks per id.)
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import skillcell  # noqa: F401  (registers the cells)
from skillcell.config import load_yaml
from skillcell.demos import EpisodeRecorder, Provenance, score_episode
from skillcell.deploy.envelope import load_envelope
from skillcell.deploy.gate import load_criteria
from skillcell.envs.registry import UnknownCellError, cell_ids, cell_spec, register_cell
from skillcell.policies import make_expert
from skillcell.review.overlays import cell_review

TIERS = ("D0", "D1", "D2")


@pytest.fixture(scope="module")
def d0_run(cell_case):
    """One seeded scripted-expert episode of the cell (a contact cell in each control mode) at D0, recorded:
    ``(env_id, env, episode)``."""
    env_id = cell_case.env_id
    env = EpisodeRecorder(cell_case.make(tier="D0"), None, source="scripted:expert",
                          provenance=Provenance(operator_id="test", consent=True))
    expert = make_expert(env, seed=0)
    obs, _ = env.reset(seed=0)
    expert.reset()
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(expert(obs))
        done = terminated or truncated
    (episode,) = env.completed
    yield env_id, env, episode
    env.close()


def _final_info(episode) -> dict:
    return {k: v[-1] for k, v in episode.infos.items() if len(v)}


def test_every_registration_resolves():
    assert "skillcell/PegInsert-v0" in cell_ids()
    for env_id in cell_ids():
        spec = cell_spec(env_id)
        assert spec.env_class.__name__ and spec.expert is not None and spec.scorer is not None, env_id
        assert callable(spec.review), f"{env_id}: no review preset"
        assert set(spec.kpi_keys), f"{env_id}: no process KPIs (kpi_keys)"
        assert gym.spec(env_id).max_episode_steps == spec.max_episode_steps


def test_expert_succeeds_at_d0(d0_run):
    env_id, _, episode = d0_run
    assert episode.success, f"{env_id}: the scripted expert failed its D0 episode ({episode.steps} steps)"
    assert not bool(episode.infos["physics_invalid"][-1])


def test_scorer_scores_in_unit_interval(d0_run):
    env_id, _, episode = d0_run
    score = score_episode(episode)
    values = {"score": score.score, **score.components}
    assert all(0.0 <= v <= 1.0 for v in values.values()), f"{env_id}: {values}"
    assert score.score > 0.5, f"{env_id}: a successful expert episode scores {score.score:.3f}"


def test_tiers_declare_d0_d1_d2_and_each_loads(d0_run):
    env_id, env, _ = d0_run
    path = env.unwrapped.cell_file("tiers.yaml")
    assert path is not None, f"{env_id}: no tiers.yaml in {env.unwrapped.cell_dir}"
    declared = load_yaml(path)
    assert set(TIERS) <= set(declared), f"{env_id}: tiers.yaml declares {sorted(declared)}"
    for tier in TIERS:
        tiered = gym.make(env_id, tier=tier)
        try:
            assert (tiered.unwrapped.tier.name, tiered.unwrapped.tier.source) == (tier, str(path))
            obs, _ = tiered.reset(seed=1)
            assert tiered.observation_space.contains(obs)
        finally:
            tiered.close()


def test_envelope_and_criteria_load_and_name_info_keys(d0_run):
    env_id, env, episode = d0_run
    cell = env.unwrapped
    envelope = load_envelope(env)
    assert "tool_speed" in envelope.active_limits
    criteria = load_criteria(cell.cell_file("criteria.yaml"), limits=cell.limits)
    assert criteria.kpis, f"{env_id}: criteria.yaml sets no process KPI limit"
    info = _final_info(episode)
    missing = [c.key for c in criteria.kpis if c.key not in info] + [k for k in cell.kpi_keys if k not in info]
    assert not missing, f"{env_id}: criteria or kpi_keys name keys the final info lacks: {missing}"
    for c in criteria.kpis:
        assert all(isinstance(b, float) for b in (c.max, c.min) if b is not None), f"{env_id}: {c}"


def test_review_preset_names_info_keys(d0_run):
    env_id, env, episode = d0_run
    review = cell_review(env)
    assert cell_spec(env_id).review is not None
    info = _final_info(episode)
    keys = {m.key for m in review.metrics} | set(review.series) | {review.score_key}
    keys |= {m.active_when for m in review.metrics if m.active_when}
    missing = sorted(k for k in keys if k not in info)
    assert not missing, f"{env_id}: the review preset shows keys the info lacks: {missing}"
    assert review.camera in env.unwrapped.camera_names


def test_capture_signals_match_the_task_channels(d0_run):
    env_id, env, _ = d0_run
    signals = cell_spec(env_id).capture_signals
    assert len(signals) in (0, env.unwrapped.task_action_size), f"{env_id}: capture_signals {signals}"


def _section(doc: str, title: str) -> str:
    match = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _table(section: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows of the markdown table whose header starts with ``header``."""
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if tuple(cells[:len(header)]) == header:
            return [[c.strip() for c in row.strip("|").split("|")] for row in lines[i + 2:]]
    raise AssertionError(f"no table with the header {' | '.join(header)}")


def _shape(section: str) -> int:
    match = re.search(r"``Box\([^`]*\((\d+),\)", section)
    assert match, "the section does not state the space as ``Box(..., (n,), ...)``"
    return int(match.group(1))


def test_docstring_documents_action_and_observation_tables(d0_run):
    env_id, env, _ = d0_run
    cell = env.unwrapped
    doc = inspect.cleandoc(type(cell).__doc__ or "")

    actions = _section(doc, "Action space")
    assert _shape(actions) == env.action_space.shape[0]
    indices = set()
    for row in _table(actions, ("index", "meaning")):
        low, _, high = row[0].strip("`").partition("-")
        indices |= set(range(int(low), int(high or low) + 1))
    assert indices == set(range(env.action_space.shape[0])), f"{env_id}: the action table covers {sorted(indices)}"

    observations = _section(doc, "Observation space")
    assert _shape(observations) == env.observation_space.shape[0]
    rows = {row[0].strip("`"): row for row in _table(observations, ("block", "size", "unit", "scale", "meaning"))}
    for field in cell.obs_fields:
        assert field.name in rows, f"{env_id}: observation block {field.name!r} is not in the docstring's table"
        assert int(rows[field.name][1]) == field.size, f"{env_id}: {field.name} has size {field.size}"
        assert rows[field.name][2] == field.unit, f"{env_id}: {field.name} is in {field.unit}"
    assert sum(f.size for f in cell.obs_fields) == np.prod(env.observation_space.shape)


def test_import_skillcell_imports_no_cell_expert_scorer_or_review_module():
    code = ("import sys, skillcell; print(sorted(m for m in sys.modules if m.startswith(("
            "'skillcell.envs.cells.', 'skillcell.policies', 'skillcell.demos', 'skillcell.review'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_register_cell_refuses_what_it_cannot_resolve_or_would_shadow():
    spec = cell_spec("skillcell/PegInsert-v0")
    again = register_cell(spec.id, spec.entry_point, expert=spec.expert_ref, scorer=spec.scorer_ref,
                          review=spec.review_ref, contact_task=spec.contact_task, run_to_end=spec.run_to_end,
                          max_episode_steps=spec.max_episode_steps)
    assert again is spec, "the same declaration twice is a no-op"
    with pytest.raises(ValueError, match=r"'skillcell/PegInsert-v0' is already registered"):
        register_cell(spec.id, spec.entry_point, max_episode_steps=100)
    with pytest.raises(ValueError, match=r"expert must be a 'package.module:Name' string, got 'PegInsertExpert'"):
        register_cell("skillcell/Other-v0", spec.entry_point, expert="PegInsertExpert")
    unknown = r"unknown cell 'skillcell/Nope-v0'; registered: .*skillcell/PegInsert-v0"
    with pytest.raises(UnknownCellError, match=unknown):
        cell_spec("skillcell/Nope-v0")
    assert "skillcell/Other-v0" not in cell_ids() and "skillcell/Other-v0" not in gym.registry


def test_a_derived_cell_finds_in_its_bases_folders_what_its_own_lacks(tmp_path):
    from skillcell import assets
    from skillcell.envs.cells.weld_pipe import WeldPipeEnv

    # the pipe's own layer over the weld cells' (its load_config reads cell.yaml from its folder)
    (tmp_path / "cell.yaml").write_bytes(assets.path("cells", "weld_pipe", "cell.yaml").read_bytes())
    (tmp_path / "criteria.yaml").write_text("kpis: {}\n")

    class Cell(WeldPipeEnv):
        cell_dir = tmp_path

    cell = Cell(tier="D0")
    try:
        assert cell.cell_file("criteria.yaml") == tmp_path / "criteria.yaml"
        assert cell.cell_file("envelope.yaml") == assets.path("cells", "weld_pipe", "envelope.yaml")
        assert cell.cell_file("tiers.yaml") == assets.path("cells", "weld_seam", "tiers.yaml")
        assert cell.tier.source == str(assets.path("cells", "weld_seam", "tiers.yaml"))
        assert cell.cell_file("scene.xml") == assets.path("cells", "weld_seam", "scene.xml")
        assert cell.cell_file("no_such.yaml") is None
    finally:
        cell.close()
