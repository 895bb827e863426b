"""Training for the gate: the training envs run at the configured tier (or curriculum), the force term uses
the envelope's own limit, and the new config keys fail clearly."""

import gymnasium as gym
import numpy as np
import pytest

from skillcell.config import ConfigError
from skillcell.deploy.envelope import load_envelope
from skillcell.policies.curriculum import TierCurriculum, TierSwitch
from skillcell.policies.force_limit import TERM, ForceLimitPenalty
from skillcell.policies.train import _make_vec_env, build_model
from skillcell.policies.train_config import load_train_config

ENV_ID = "skillcell/PegInsert-v0"
EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"
TINY = {"env": {"id": ENV_ID}, "demos": {"source": "none"}, "bc": {"enabled": False}, "progress": False,
        "rl": {"net_arch": [16, 16], "ppo": {"n_steps": 32, "batch_size": 32, "n_epochs": 1}}}


def _within(value, bounds):
    low, high = bounds
    return low <= value <= high


def _assert_d2_draws(cell):
    """The episode's draws come from D2's declared ranges, and D2 varies what D1 does not."""
    cfg, sample = cell.tier.config, cell.tier_sample
    assert cell.tier.name == "D2"
    assert _within(sample.latency_steps, cfg.action_latency_steps) and sample.latency_steps >= 1
    assert _within(sample.friction_scale, cfg.friction_scale) and sample.friction_scale != 1.0
    assert np.all(np.abs(sample.ft_bias[:3]) <= cfg.ft_force_bias_n) and np.any(sample.ft_bias != 0)


def test_training_envs_run_at_the_configured_tier():
    config = load_train_config(None, {**TINY, "env": {"id": ENV_ID, "tier": "D2", "n_envs": 1}})
    venv = _make_vec_env(config)
    venv.reset()
    _assert_d2_draws(venv.envs[0].unwrapped)
    venv.close()


def test_curriculum_moves_the_training_envs_from_d1_to_d2():
    config = load_train_config(None, {**TINY, "env": {"id": ENV_ID, "curriculum": [
        {"tier": "D1", "until_steps": 32}, {"tier": "D2"}]}})
    venv = _make_vec_env(config)
    model = build_model(config, venv, demo_buffer=False)
    switch = venv.envs[0].env  # Monitor -> TierSwitch
    assert isinstance(switch, TierSwitch) and switch.unwrapped.tier.name == "D1"
    model.learn(64, callback=TierCurriculum([("D1", 32), ("D2", None)]))
    assert switch.pending == "D2"
    venv.envs[0].reset()  # the switch takes effect at the next episode
    _assert_d2_draws(venv.envs[0].unwrapped)
    venv.close()


def test_tier_switch_is_reproducible():
    def run():
        switch = TierSwitch(lambda tier: gym.make(ENV_ID, tier=tier), ["D1", "D2"])
        switch.reset(seed=11)
        switch.set_tier("D2")
        obs = [switch.reset()[0]] + [switch.step(np.full(6, 0.3))[0] for _ in range(5)]
        switch.close()
        return np.array(obs)

    np.testing.assert_array_equal(run(), run())


def test_force_term_uses_the_envelope_limit_and_is_reported():
    env = ForceLimitPenalty(gym.make(ENV_ID, randomize=False), weight=2.0, start_fraction=0.1)
    limit = load_envelope(env).tool_force_max_n
    assert env.limit_n == limit
    env.reset(seed=0)
    terms = []
    for t in range(40):  # 20 mm beside the hole, then straight down: the peg meets the block
        action = np.array([1.0, 0, 0, 0, 0, 0] if t < 4 else [0, 0, -1.0, 0, 0, 0], np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        assert reward == pytest.approx(sum(v for k, v in info.items() if k.startswith("reward_")))
        force = float(np.linalg.norm(env.unwrapped.wrench_tool[:3]))
        expected = -2.0 * max(0.0, force - 0.1 * limit) / limit
        assert info[TERM] == pytest.approx(expected)
        terms.append(info[TERM])
        if terminated or truncated:
            break
    assert min(terms) < 0.0 and max(terms) == 0.0  # free motion costs nothing, pressing does
    env.close()


def test_training_reward_includes_the_term():
    config = load_train_config(None, {**TINY, "env": {"id": ENV_ID, "force_penalty": {"weight": 1.0}}})
    venv = _make_vec_env(config)
    venv.reset()
    _, _, _, infos = venv.step(np.zeros((1, 6), np.float32))
    assert TERM in infos[0]
    venv.close()


def test_the_hardware_example_trains_at_d2():
    config = load_train_config(EXAMPLES / "train_peg_insert_d2.yaml")
    assert config.env.tiers[-1] == "D2" and config.env.force_penalty is not None and config.dagger is not None


@pytest.mark.parametrize("key, named", [
    ({"env": {"tier": "D2", "curriculum": [{"tier": "D2"}]}}, "env.curriculum: give env.tier or env.curriculum"),
    ({"env": {"curriculum": [{"tier": "D1"}, {"tier": "D2"}]}}, r"env.curriculum\[0\].until_steps: required"),
    ({"env": {"curriculum": [{"tier": "D1", "until_steps": 5}, {"tier": "D2", "until_steps": 9}]}},
     r"env.curriculum\[1\].until_steps: the last stage"),
    ({"env": {"curriculum": [{"tier": "D1", "untill_steps": 5}]}}, r"env.curriculum\[0\].untill_steps: unknown key"),
    ({"env": {"history": -1}}, "env.history: must be in"),
    ({"env": {"force_penalty": {"weigth": 1.0}}}, "env.force_penalty.weigth: unknown key"),
    ({"dagger": {"round": 2}}, "dagger.round: unknown key"),
    ({"dagger": {"beta0": 1.5}}, "dagger.beta0: must be in"),
    ({"dagger": {}, "bc": {"enabled": False}}, "dagger: retrains the behaviour-cloned learner"),
    ({"residual": {"base": "scripted"}}, "residual.base: 'bc' takes"),
    ({"residual": {"bse": "bc"}}, "residual.bse: unknown key"),
    ({"residual": {"base": "bc"}, "finetune": {"bc_weight": 1.0}}, "finetune.bc_weight: BC steps would pull"),
    ({"residual": {"base": "scripted"}, "bc": {"enabled": False}, "finetune": {"bc_weight": 0.0},
      "env": {"history": 2}},
     "residual.base: a scripted base reads the plain observation"),
])
def test_new_config_keys_fail_naming_the_key(key, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.") if "\\" not in named else named):
        load_train_config(EXAMPLES / "train_peg_insert.yaml", key)


def test_a_missing_dagger_expert_is_named_before_anything_is_written(tmp_path):
    from skillcell.policies.train import train

    config = load_train_config(None, {"env": {"id": ENV_ID}, "demos": {"episodes": 1},
                                      "dagger": {"expert": str(tmp_path / "nope.zip")}, "progress": False})
    with pytest.raises(ConfigError, match=r"dagger\.expert: .*nope\.zip: no such model file"):
        train(config, out=tmp_path / "run", log=lambda _m: None)
    assert not (tmp_path / "run").exists()
