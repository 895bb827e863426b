"""RL fine-tuning from a BC start: critic warm-up, the decaying BC term, the SAC demo buffer."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

import skillcell  # noqa: F401  (registers the cells)
from skillcell.policies.bc import DemoTransitions, behaviour_clone, expert_demos
from skillcell.policies.finetune import BCRegularizer, CriticWarmup, DemoMixReplayBuffer, set_actor_frozen

ENV_ID = "skillcell/PegInsert-v0"
# SB3's small networks: one intra-op thread. With the default (one per core) a test run beside any
# other busy process was measured 100x slower (SAC, 150 updates: 75 s against 0.8 s).
th.set_num_threads(1)


@pytest.fixture(scope="module")
def demos() -> DemoTransitions:
    return expert_demos(ENV_ID, 3, seed=0)


def _venv():
    return DummyVecEnv([lambda: gym.make(ENV_ID)])


def _snapshot(params) -> list[th.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before, params) -> bool:
    return any(not th.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def _marked(n: int, value: float, obs_dim: int = 4, act_dim: int = 2) -> DemoTransitions:
    """Transitions whose every observation entry is ``value``: their source is visible in a batch."""
    return DemoTransitions(np.full((n, obs_dim), value, np.float32), np.zeros((n, act_dim), np.float32),
                           np.ones(n, np.float32), np.full((n, obs_dim), value, np.float32), np.zeros(n, bool),
                           np.zeros(n, bool), np.arange(n) // 10)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_demo_buffer_puts_demonstrations_in_every_batch_at_the_ratio(ratio):
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    buffer = DemoMixReplayBuffer(1000, obs_space, act_space, device="cpu", demo_ratio=ratio)
    buffer.add_demos(_marked(50, 1.0))
    # Before any online transition, a batch is all demonstrations.
    assert (buffer.sample(16).observations == 1.0).all()
    for _ in range(300):
        buffer.add(np.full((1, 4), -1.0), np.full((1, 4), -1.0), np.zeros((1, 2)), np.zeros(1), np.zeros(1),
                   [{}])
    np.random.seed(0)
    for _ in range(20):
        batch = buffer.sample(64)
        from_demos = int((batch.observations[:, 0] == 1.0).sum())
        assert from_demos == round(ratio * 64)
        assert int((batch.observations[:, 0] == -1.0).sum()) == 64 - from_demos
        assert batch.observations.shape == (64, 4) and batch.rewards.shape == (64, 1)
    # Online transitions evict each other; demonstrations stay.
    for _ in range(2000):
        buffer.add(np.zeros((1, 4)), np.zeros((1, 4)), np.zeros((1, 2)), np.zeros(1), np.zeros(1), [{}])
    assert buffer.n_demos == 50 and (buffer.sample(64).observations[:, 0] == 1.0).sum() == round(ratio * 64)


def test_demo_buffer_keeps_terminations_and_normalizes_like_sb3():
    from stable_baselines3.common.vec_env import VecNormalize

    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    buffer = DemoMixReplayBuffer(10, obs_space, gym.spaces.Box(-1, 1, (2,), np.float32), device="cpu",
                                 demo_ratio=1.0)
    demos = _marked(5, 3.0)
    demos.terminations[:] = True
    demos.truncations[:] = False
    buffer.add_demos(demos)
    vn = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), training=False, norm_reward=False)
    vn.obs_rms.mean, vn.obs_rms.var = np.full(4, 1.0), np.full(4, 4.0)  # only the shape-4 stats matter here
    batch = buffer.sample(8, env=vn)
    assert th.allclose(batch.observations, th.full((8, 4), 1.0), atol=1e-4)  # (3 - 1) / 2
    assert (batch.dones == 1.0).all()


def test_critic_warmup_freezes_the_actor_then_releases_it(demos):
    model = PPO("MlpPolicy", _venv(), n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": [32, 32], "vf": [32, 32]}})
    behaviour_clone(model, demos, steps=20)
    pol = model.policy
    actor = [*pol.mlp_extractor.policy_net.parameters(), *pol.action_net.parameters(), pol.log_std]
    critic = [*pol.mlp_extractor.value_net.parameters(), *pol.value_net.parameters()]
    a0, c0 = _snapshot(actor), _snapshot(critic)
    warmup = CriticWarmup(128)
    model.learn(128, callback=warmup)  # two rollouts, both updates critic-only
    assert not _changed(a0, actor) and _changed(c0, critic)
    assert all(p.requires_grad for p in actor)  # a run ending inside the warm-up leaves the model trainable
    warmup = CriticWarmup(128)
    model.learn(128, callback=warmup, reset_num_timesteps=False)  # past the warm-up: the actor learns
    assert _changed(a0, actor) and not warmup.active


def test_bc_regularizer_decays_and_waits_for_the_warmup(demos):
    reg = BCRegularizer(demos, weight=2.0, half_life=1000, steps_per_1k=100)
    reg.start_step = 500
    assert reg.weight(500) == 2.0 and reg.weight(1500) == pytest.approx(1.0) and reg.weight(2500) == pytest.approx(0.5)
    model = PPO("MlpPolicy", _venv(), n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": [32, 32], "vf": [32, 32]}})
    behaviour_clone(model, demos, steps=20)
    reg = BCRegularizer(demos, weight=1.0, half_life=1000, steps_per_1k=500)
    model.learn(256, callback=[CriticWarmup(128), reg])
    assert reg.start_step == 128  # the schedule starts when the actor is released
    assert reg.gradient_steps == 64  # 500 per 1000 env steps over the 128 steps after the warm-up
    assert np.isfinite(reg.last_loss)


class _RolloutPolicy(BaseCallback):
    """Keeps the actor's parameters as they were when each rollout's collection ended."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.collected = _snapshot(self.model.policy.parameters())


def test_bc_steps_never_run_between_a_rollout_and_its_ppo_update(demos):
    # PPO's ratios compare against the policy that collected the rollout; a BC step in between
    # made approx_kl large at the first minibatch and target_kl stopped every update there.
    model = PPO("MlpPolicy", _venv(), n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": [32, 32], "vf": [32, 32]}})
    behaviour_clone(model, demos, steps=20)
    probe, reg = _RolloutPolicy(), BCRegularizer(demos, weight=1.0, half_life=0, steps_per_1k=500)
    checked = []
    train = model.train

    def checked_train() -> None:
        checked.append(not _changed(probe.collected, model.policy.parameters()))
        train()

    model.train = checked_train
    model.learn(256, callback=[probe, reg])  # the probe first: it sees the policy before reg
    assert checked == [True] * 4 and reg.gradient_steps == 128


def test_sac_finetunes_end_to_end_from_bc_with_demonstrations_in_every_batch(demos):
    model = SAC("MlpPolicy", _venv(), batch_size=32, learning_starts=0, seed=0, device="cpu", ent_coef=0.001,
                policy_kwargs={"net_arch": [32, 32]}, replay_buffer_class=DemoMixReplayBuffer,
                replay_buffer_kwargs={"demo_ratio": 0.5})
    behaviour_clone(model, demos, steps=50, log_std=-3.0)
    buffer = model.replay_buffer
    buffer.add_demos(demos, scale_action=model.policy.scale_action)
    assert buffer.n_demos == len(demos)
    actor = list(model.actor.parameters())
    a0 = _snapshot(actor)
    warmup, reg = CriticWarmup(60), BCRegularizer(demos, steps_per_1k=250)
    model.learn(150, callback=[warmup, reg])
    assert model._n_updates == 150
    assert buffer.demo_samples == 16 * 150 and buffer.online_samples == 16 * 150
    assert _changed(a0, actor) and reg.gradient_steps > 0
    action, _ = model.predict(demos.observations[:3], deterministic=True)
    assert action.shape == (3, 6) and np.isfinite(action).all()


def test_frozen_actor_gets_no_gradient(demos):
    model = SAC("MlpPolicy", _venv(), seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    set_actor_frozen(model, True)
    assert not any(p.requires_grad for p in model.actor.parameters())
    assert all(p.requires_grad for p in model.critic.parameters())
    set_actor_frozen(model, False)
    assert all(p.requires_grad for p in model.actor.parameters())
