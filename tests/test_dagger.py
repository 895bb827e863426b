"""DAgger: the data grow every round, the labels are the expert's actions on the visited observations,
relabelled episodes are stored with provenance, and human captures work as seed data."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

from skillcell.demos import DemoDataset, FrameTransform, import_capture
from skillcell.demos.synthetic import write_capture
from skillcell.policies.bc import behaviour_clone, expert_demos
from skillcell.policies.dagger import dagger
from skillcell.policies.scripted import make_expert

ENV_ID = "skillcell/PegInsert-v0"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)  # as skillcell train does: tiny networks, contended cores
    demos = expert_demos(ENV_ID, 1, seed=0)
    model = PPO("MlpPolicy", gym.make(ENV_ID), seed=0, device="cpu", n_steps=64, batch_size=32,
                policy_kwargs={"net_arch": [32, 32]})
    behaviour_clone(model, demos, steps=50)
    env = gym.make(ENV_ID)
    folder = tmp_path_factory.mktemp("dagger") / "dagger"
    rounds, aggregate = dagger(model, demos, env=env, expert=make_expert(env), expert_name="scripted", rounds=3,
                               episodes_per_round=1, beta0=0.5, beta_decay=0.5, bc_kwargs={"steps": 50},
                               dataset=folder, seed=0, first_episode_seed=700)
    return demos, rounds, aggregate, folder


def test_the_data_grow_every_round(run):
    demos, rounds, aggregate, _ = run
    sizes = [r.aggregate_steps for r in rounds]
    assert sizes == list(np.cumsum([r.steps for r in rounds]) + len(demos))
    assert all(b > a for a, b in zip([len(demos), *sizes], sizes, strict=False))
    assert len(aggregate) == sizes[-1]
    assert [r.beta for r in rounds] == [0.5, 0.25, 0.125]


def test_labels_are_the_experts_actions_on_the_visited_observations(run):
    _, _, _, folder = run
    env = gym.make(ENV_ID)
    dataset = DemoDataset(folder)
    assert len(dataset) == 3
    learner_steps = 0
    for episode in dataset:
        expert = make_expert(env)  # a fresh expert, fed the episode's observations one at a time
        expert.reset()
        labels = np.stack([expert(o) for o in episode.observations[:-1]])
        np.testing.assert_array_equal(episode.actions, labels)
        executed, mask = episode.extras["executed_actions"], episode.extras["expert_executed"].astype(bool)
        np.testing.assert_array_equal(executed[mask], labels[mask])
        learner_steps += int((~mask).sum())
    assert learner_steps > 0  # the learner drove part of the time: those labels correct it
    env.close()


def test_relabelled_episodes_say_so(run):
    _, _, _, folder = run
    dataset = DemoDataset(folder)
    for i, (entry, episode) in enumerate(zip(dataset.entries, dataset, strict=True)):
        assert entry.source == "dagger-relabel" and entry.operator_id == "dagger-relabel"
        assert episode.notes["dagger"]["round"] == i and episode.notes["dagger"]["expert"] == "scripted"
        assert f"DAgger round {i}" in episode.provenance.notes and "scripted" in episode.provenance.notes
        assert episode.seed == 700 + i


def test_relabelled_episodes_replay_bit_exactly_from_their_states(run):
    from skillcell.demos import replay_episode

    _, _, _, folder = run
    dataset = DemoDataset(folder)
    report = replay_episode(folder / dataset.entries[0].file, "state")
    assert report.bit_exact and report.replayed_steps == dataset.entries[0].steps


def test_rollouts_start_from_the_env_reset(run):
    _, _, _, folder = run
    env = gym.make(ENV_ID)
    for episode in DemoDataset(folder):
        np.testing.assert_array_equal(episode.observations[0], env.reset(seed=episode.seed)[0])
    env.close()


def test_dagger_from_human_captures_through_train(tmp_path):
    """Seed data: an imported capture of a person inserting the peg (not from the env's reset pose)."""
    from skillcell.policies.train import train
    from skillcell.policies.train_config import load_train_config

    start = np.array([0.45, 0.10, 0.96])

    def path(t):
        s = np.clip(np.asarray(t) / 4.0, 0.0, 1.0)[:, None]
        s = s * s * (3 - 2 * s)
        return start + s * np.array([0.0, 0.0, -0.061]), np.tile([0.0, 1.0, 0.0, 0.0], (len(s), 1))

    csv, _ = write_capture(tmp_path / "insert.csv", path, 5.0, cell_id=ENV_ID, capture_to_cell=FrameTransform(),
                           length_unit="mm", position_noise_mm=0.02,
                           extra_sidecar={"tool_contact_is_collision": False})
    imported = import_capture(csv, tmp_path / "captures", progress=False).episode
    env = gym.make(ENV_ID)
    assert not np.array_equal(imported.observations[0], env.reset(seed=0)[0])  # starts where the person was
    env.close()

    config = load_train_config(None, {
        "env": {"id": ENV_ID}, "demos": {"source": "dataset", "path": str(tmp_path / "captures")},
        "bc": {"steps": 50}, "dagger": {"rounds": 2, "episodes_per_round": 1, "bc_steps": 50, "seed": 0},
        "rl": {"steps": 0, "net_arch": [16, 16]}, "eval": {"every_steps": 0, "episodes": 1},
        "progress": False, "checkpoints": False})
    result = train(config, out=tmp_path / "run", log=lambda _m: None)
    assert [r["phase"] for r in result.metrics] == ["bc", "dagger", "dagger"]
    relabelled = DemoDataset(tmp_path / "run" / "dagger")
    assert len(relabelled) == 2
    reset = gym.make(ENV_ID)
    for episode in relabelled:  # DAgger's states start at the reset pose, the captures' do not
        np.testing.assert_array_equal(episode.observations[0], reset.reset(seed=episode.seed)[0])
    reset.close()
    assert (tmp_path / "run" / "dagger_model.zip").is_file()
