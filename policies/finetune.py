"""RL fine-tuning from a behaviour-cloned start without wiping out what BC learned.

Three SB3 mechanisms, none of which patches SB3 internals:

- `CriticWarmup` (a callback, PPO and SAC): the actor's parameters are frozen
  (``requires_grad_(False)``) for the first ``steps`` env steps, so the updates on them train the
  critic only. A fresh critic's value estimates are noise; PPO's advantages (and SAC's actor
  gradient through Q) built on them move a good BC policy in random directions, and its return
  collapses in the first updates (SB3 issue #543). PPO's default MLP keeps separate policy and
  value networks, so freezing one leaves the other free. Unfrozen at the end of the first rollout
  past ``steps``, before the update that follows it.
- `BCRegularizer` (a callback, PPO and SAC): behaviour-cloning gradient steps on the
  demonstrations interleaved with RL (a fixed number per 1000 env steps, run before each rollout
  is collected), with a weight that halves every ``half_life`` env steps (DAPG-style decay). The steps
  use their own Adam; Adam is invariant to a loss's scale, so the weight scales the step size
  (``learning_rate * weight``) instead of the loss, which is what a weighted loss term would do
  under plain gradient descent. The BC steps move the policy before the next rollout is collected,
  so PPO's ratios (computed against the rollout policy) stay exact.
- `DemoMixReplayBuffer` (SAC's ``replay_buffer_class``): a replay buffer that keeps the
  demonstrations in a store of their own, never evicted, and draws a fixed share of every
  batch from it (``demo_ratio``, RLPD's symmetric sampling at 0.5).

Conservative PPO updates (a low learning rate, ``clip_range`` 0.1, ``target_kl``) and a sane
``log_std`` after BC (`skillcell.policies.bc.set_log_std`) are settings of the model, made by
`skillcell.policies.train`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from skillcell.policies.bc import DemoTransitions, actor_parameters, bc_loss, demo_tensors

__all__ = ["BCRegularizer", "CriticWarmup", "DemoMixReplayBuffer", "set_actor_frozen"]


def set_actor_frozen(model, frozen: bool) -> None:
    """Freezes (or unfreezes) the parameters that shape ``model``'s actions (PPO or SAC).

    PPO: the policy network, the action head, ``log_std`` and, if the features extractor is shared
    with the critic and has parameters, that too (the critic then learns on fixed features).
    SAC: the whole actor. A frozen parameter gets no gradient, so the optimizers skip it.
    """
    for p in actor_parameters(model):
        p.requires_grad_(not frozen)


class CriticWarmup(BaseCallback):
    """Keeps the actor frozen while the first ``steps`` env steps train the critic alone."""

    def __init__(self, steps: int, verbose: int = 0):
        super().__init__(verbose)
        if steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {steps}")
        self.steps = int(steps)
        self.active = False

    def _on_training_start(self) -> None:
        if self.steps > 0 and self.model.num_timesteps <= self.steps:
            set_actor_frozen(self.model, True)
            self.active = True

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # Runs after a rollout and before the update on it: the update on the rollout that crosses
        # `steps` is the first to move the actor.
        if self.active and self.model.num_timesteps > self.steps:
            set_actor_frozen(self.model, False)
            self.active = False
            if self.verbose:
                print(f"critic warm-up done at {self.model.num_timesteps} env steps; actor unfrozen")
        self.logger.record("finetune/actor_frozen", float(self.active))

    def _on_training_end(self) -> None:
        if self.active:  # a run shorter than the warm-up leaves a trainable model behind
            set_actor_frozen(self.model, False)
            self.active = False


class BCRegularizer(BaseCallback):
    """Behaviour-cloning gradient steps on ``demos`` interleaved with RL, with a decaying weight.

    Before every rollout is collected (PPO: every ``n_steps``; SAC: every ``train_freq`` env steps),
    and once when training ends, it runs the BC steps that are due at ``steps_per_1k`` per 1000 env
    steps, on minibatches of the BC loss (`skillcell.policies.bc.bc_loss`, mean regression), with step size
    ``learning_rate * weight``, where ``weight = weight0 * 0.5 ** (t / half_life)`` and ``t`` counts
    env steps since the actor became trainable (a critic warm-up does not use up the schedule).
    ``half_life`` 0 keeps the weight constant; below ``min_weight`` the regularizer stops.
    """

    def __init__(self, demos: DemoTransitions, *, weight: float = 1.0, half_life: int = 10_000,
                 steps_per_1k: float = 20.0, batch_size: int = 256, learning_rate: float = 3e-4,
                 min_weight: float = 1e-2, seed: int = 0, verbose: int = 0):
        super().__init__(verbose)
        if half_life < 0 or steps_per_1k < 0:
            raise ValueError(f"half_life and steps_per_1k must be >= 0, got {half_life}, {steps_per_1k}")
        if len(demos) == 0:
            raise ValueError("BCRegularizer needs demonstrations")
        self.demos, self.weight0, self.half_life = demos, float(weight), int(half_life)
        self.steps_per_1k, self.batch_size, self.learning_rate = float(steps_per_1k), int(batch_size), learning_rate
        self.min_weight = float(min_weight)
        self.rng = np.random.default_rng(seed)
        self.start_step: int | None = None  # env steps when the actor became trainable
        self.last_step = 0
        self.due = 0.0
        self.gradient_steps = 0
        self.last_loss = math.nan
        self._optimizer = None
        self._tensors = None

    def weight(self, env_steps: int) -> float:
        """The weight at ``env_steps`` (total env steps of the model)."""
        if self.start_step is None:
            return self.weight0
        if self.half_life == 0:
            return self.weight0
        return self.weight0 * 0.5 ** ((env_steps - self.start_step) / self.half_life)

    def _on_training_start(self) -> None:
        self._tensors = demo_tensors(self.model, self.demos)
        self._params = actor_parameters(self.model)
        self._optimizer = th.optim.Adam(self._params, lr=self.learning_rate)
        self.last_step = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # After the previous update, before the next collection: BC steps between a collection and its
        # update would make PPO's ratios (and target_kl's early stop) compare against a policy that did
        # not collect the rollout; they stopped every PPO update at its first minibatch.
        self._regularize()

    def _on_training_end(self) -> None:
        self._regularize()  # the steps due for the last rollout

    def _regularize(self) -> None:
        now = self.model.num_timesteps
        if not any(p.requires_grad for p in self._params):
            self.last_step = now  # the actor is frozen (critic warm-up): nothing to regularize yet
            return
        if self.start_step is None:
            self.start_step = self.last_step
        weight = self.weight(now)
        self.logger.record("finetune/bc_weight", weight)
        self.due += self.steps_per_1k * (now - self.last_step) / 1000.0
        self.last_step = now
        n_steps, self.due = int(self.due), self.due - int(self.due)
        if weight < self.min_weight or n_steps == 0:
            return
        obs, acts = self._tensors
        for group in self._optimizer.param_groups:
            group["lr"] = self.learning_rate * weight
        self.model.policy.set_training_mode(True)
        losses = []
        for _ in range(n_steps):
            idx = th.as_tensor(self.rng.integers(0, len(obs), size=min(self.batch_size, len(obs))), device=obs.device)
            loss = bc_loss(self.model, obs[idx], acts[idx])
            self._optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self._params, 1.0)
            self._optimizer.step()
            losses.append(float(loss.detach()))
        self.model.policy.set_training_mode(False)
        self.gradient_steps += n_steps
        self.last_loss = float(np.mean(losses))
        self.logger.record("finetune/bc_loss", self.last_loss)


class DemoMixReplayBuffer(ReplayBuffer):
    """A `ReplayBuffer` that keeps demonstrations apart and mixes them into every batch.

    Pass it to SAC as ``replay_buffer_class=DemoMixReplayBuffer, replay_buffer_kwargs=
    {"demo_ratio": 0.5}``, then `add_demos`. Every `sample` of ``batch_size`` draws
    ``round(demo_ratio * batch_size)`` transitions (with replacement) from the demonstrations and
    the rest from the online buffer, which fills and evicts as usual; the demonstrations are never
    evicted. While the online buffer is still empty the whole batch comes from the demonstrations.
    Observations are stored raw and normalized at sampling time with the `VecNormalize` SAC
    passes in, as SB3 does for its own transitions, so both halves see the same normalization.

    ``demo_samples`` and ``online_samples`` count what the buffer has served, so the mix is checkable.
    """

    def __init__(self, buffer_size: int, observation_space, action_space, device: Any = "auto", n_envs: int = 1,
                 optimize_memory_usage: bool = False, handle_timeout_termination: bool = True,
                 demo_ratio: float = 0.5):
        super().__init__(buffer_size, observation_space, action_space, device=device, n_envs=n_envs,
                         optimize_memory_usage=optimize_memory_usage,
                         handle_timeout_termination=handle_timeout_termination)
        if not 0.0 <= demo_ratio <= 1.0:
            raise ValueError(f"demo_ratio must be in [0, 1], got {demo_ratio}")
        self.demo_ratio = float(demo_ratio)
        obs_dim, act_dim = int(np.prod(self.obs_shape)), self.action_dim
        self.demo_observations = np.zeros((0, obs_dim), dtype=observation_space.dtype)
        self.demo_next_observations = np.zeros((0, obs_dim), dtype=observation_space.dtype)
        self.demo_actions = np.zeros((0, act_dim), dtype=self._maybe_cast_dtype(action_space.dtype))
        self.demo_rewards = np.zeros(0, dtype=np.float32)
        self.demo_dones = np.zeros(0, dtype=np.float32)
        self.demo_samples = 0
        self.online_samples = 0

    @property
    def n_demos(self) -> int:
        return len(self.demo_actions)

    def add_demos(self, demos: DemoTransitions, scale_action=None) -> None:
        """Appends demonstration transitions (raw observations, env actions).

        ``scale_action`` maps env actions to the buffer's space (SAC stores
        ``policy.scale_action(a)``; the identity for ``Box(-1, 1)``). Terminations stop
        bootstrapping; truncations (time limits) do not, as SB3 treats its own timeouts.
        """
        actions = np.clip(demos.actions, -1.0, 1.0)
        if scale_action is not None:
            actions = scale_action(actions)
        shape = (len(demos), -1)
        self.demo_observations = np.concatenate([self.demo_observations,
                                                 demos.observations.reshape(shape).astype(self.demo_observations.dtype)])
        self.demo_next_observations = np.concatenate([
            self.demo_next_observations, demos.next_observations.reshape(shape).astype(self.demo_observations.dtype)])
        self.demo_actions = np.concatenate([self.demo_actions, actions.reshape(shape).astype(self.demo_actions.dtype)])
        self.demo_rewards = np.concatenate([self.demo_rewards, demos.rewards.astype(np.float32)])
        self.demo_dones = np.concatenate([self.demo_dones, demos.terminations.astype(np.float32)])

    def _demo_samples(self, n: int, env=None) -> tuple[np.ndarray, ...]:
        idx = np.random.randint(0, self.n_demos, size=n)  # np.random, as SB3's own sampling (seeded by SB3)
        return (self._normalize_obs(self.demo_observations[idx], env), self.demo_actions[idx],
                self._normalize_obs(self.demo_next_observations[idx], env), self.demo_dones[idx].reshape(-1, 1),
                self._normalize_reward(self.demo_rewards[idx].reshape(-1, 1), env))

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
        online_size = self.size()
        if self.n_demos == 0:
            n_demo = 0
        elif online_size == 0:
            n_demo = batch_size
        else:
            n_demo = round(self.demo_ratio * batch_size)
        n_online = batch_size - n_demo
        if n_online > 0 and online_size == 0:
            raise ValueError("DemoMixReplayBuffer: nothing to sample (no demonstrations and no transitions yet)")
        parts = []
        if n_online > 0:
            parts.append(super().sample(n_online, env)[:5])
        if n_demo > 0:
            parts.append(tuple(map(self.to_torch, self._demo_samples(n_demo, env))))
        self.demo_samples += n_demo
        self.online_samples += n_online
        # Online first, then demonstrations: the order within a batch does not matter to SAC.
        return ReplayBufferSamples(*(th.cat([p[i] for p in parts]) for i in range(5)))
