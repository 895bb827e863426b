"""`EpisodeRecorder`: a Gymnasium wrapper that turns any rollout of a cell into episode files.

Whatever drives the env (the scripted expert, a policy, the capture importer) goes through
``reset``/``step`` as usual; the recorder keeps what happened, with the MuJoCo integration state
and the controller's command at every step, and on the episode's last step hands a complete
`Episode` to a `DatasetWriter` (or keeps it, when no dataset is given). An episode cut short by a
``reset`` before it ended is dropped, so a dataset never holds partial episodes.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from tqdm.auto import tqdm

from skillcell.demos.episode import (
    DatasetWriter,
    Episode,
    EpisodeEntry,
    Provenance,
    model_hash,
    model_xml,
    stack_infos,
)
from skillcell.envs.base import CellEnv
from skillcell.envs.registry import cell_spec

__all__ = ["EpisodeRecorder", "generate_demos", "scripted_provenance", "start_episode_from_state"]


def start_episode_from_state(cell, state: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Starts an episode of the `CellEnv` ``cell`` at a stored integration state; ``(obs, info)``.

    `CellEnv.set_state` restores the state, resets the controller command and the episode
    statistics and measures the metrics, as `CellEnv.reset` does after placing the robot; the
    ``info`` it does not return is measured once more here. That second measurement is of the
    same instant (no motion, no arc yet), so it changes nothing, and recording and replay both
    start episodes through this function, so they match even if it did.
    """
    obs = cell.set_state(state)
    return obs, {**cell._evaluate(), "instability": ""}


def scripted_provenance(name: str) -> Provenance:
    """Provenance for rollouts that record no person (scripted experts, policies)."""
    return Provenance(operator_id=name, site="simulation", source_device="skillcell", consent=True,
                      notes="synthetic: no person was recorded")


class EpisodeRecorder(gym.Wrapper):
    """Records every completed episode of a `skillcell` env made with `gym.make`.

    Args:
        env: a ``gym.make`` env whose ``unwrapped`` is a `CellEnv` (the spec gives id and kwargs).
        dataset: a folder or `DatasetWriter` to append episodes to; ``None`` keeps them in
            `completed` instead.
        source: what produced the actions (``"scripted:expert"``, ``"policy"``, ``"capture"``).
        provenance: operator, site, device, consent, notes.
        policy: free metadata about the policy (name, skill, seed), stored in the episode.
    """

    def __init__(self, env: gym.Env, dataset: str | Path | DatasetWriter | None = None, *,
                 source: str = "policy", provenance: Provenance | None = None,
                 policy: dict[str, Any] | None = None):
        super().__init__(env)
        if not isinstance(env.unwrapped, CellEnv):
            raise TypeError(f"EpisodeRecorder records skillcell cells, got {type(env.unwrapped).__name__}")
        if env.spec is None:
            raise ValueError("EpisodeRecorder needs an env made with gym.make (its spec names the env and kwargs)")
        self.writer = DatasetWriter(dataset) if isinstance(dataset, (str, Path)) else dataset
        self.source = source
        self.provenance = provenance or Provenance(operator_id="unknown")
        self.policy = dict(policy or {})
        self.completed: list[Episode] = []
        self.entries: list[EpisodeEntry] = []
        cell = env.unwrapped
        # Both from the model as built, before a reset may edit it (a tier's friction and mass
        # draws); a replay builds the env the same way and compares the hash before its reset.
        self._model_hash = model_hash(cell.model)
        self._model_xml = model_xml(env)
        self._state_size = mujoco.mj_stateSize(cell.model, mujoco.mjtState.mjSTATE_INTEGRATION)
        self._buffer: dict[str, list] | None = None
        self._seed: int | None = None

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._seed = seed
        self._buffer = {key: [] for key in ("observations", "actions", "rewards", "terminations", "truncations",
                                             "states", "tcp_pos", "tcp_quat", "command_pos", "command_quat",
                                             "infos")}
        self._record(obs, info)
        return obs, info

    def restart_from_current_state(self) -> np.ndarray:
        """Starts the recording afresh from the env's current MuJoCo state.

        For a rollout that must begin elsewhere than where ``reset`` put the robot (the capture
        importer moves the arm to the capture's first pose). Returns the observation.
        """
        if self._buffer is None:
            raise RuntimeError("call reset() first")
        cell = self.env.unwrapped
        obs, info = start_episode_from_state(cell, cell.get_state())
        for key in self._buffer:
            self._buffer[key].clear()
        self._record(obs, info)
        return obs

    def step(self, action):
        if self._buffer is None:
            raise RuntimeError("call reset() before step()")
        # Kept as given (dtype included) so that a replay passes the env the very same values.
        recorded = np.array(action, copy=True)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._buffer["actions"].append(recorded)
        self._buffer["rewards"].append(float(reward))
        self._buffer["terminations"].append(bool(terminated))
        self._buffer["truncations"].append(bool(truncated))
        self._record(obs, info)
        if terminated or truncated:
            self._finish()
        return obs, reward, terminated, truncated, info

    def finish(self) -> EpisodeEntry | Episode:
        """Ends the episode being recorded before the env ended it (an operator's stop) and keeps it.

        Its last step is marked truncated (the episode ended for a reason outside the task, as
        Gymnasium's time limit marks its own), then it is written like any other; returns its
        entry, or the `Episode` when no dataset was given.
        """
        if self._buffer is None or not self._buffer["actions"]:
            raise RuntimeError("finish() needs an episode with at least one step; call reset() and step() first")
        self._buffer["truncations"][-1] = True
        self._finish()
        return self.completed[-1] if self.writer is None else self.entries[-1]

    # ------------------------------------------------------------------ internals

    def _record(self, obs, info) -> None:
        cell, b = self.env.unwrapped, self._buffer
        state = np.empty(self._state_size)
        mujoco.mj_getState(cell.model, cell.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, cell.data.site_xmat[cell.tcp_site])
        b["observations"].append(np.array(obs, copy=True))
        b["states"].append(state)
        b["tcp_pos"].append(cell.data.site_xpos[cell.tcp_site].copy())
        b["tcp_quat"].append(quat)
        b["command_pos"].append(cell.controller.p_world_cmd.copy())
        b["command_quat"].append(cell.controller.quat_world_cmd.copy())
        b["infos"].append(dict(info))

    def _finish(self) -> None:
        b, cell, spec = self._buffer, self.env.unwrapped, self.env.spec
        self._buffer = None
        kwargs = dict(spec.kwargs)
        episode = Episode(
            observations=np.stack(b["observations"]),
            actions=np.stack(b["actions"]),
            rewards=np.asarray(b["rewards"], dtype=np.float64),
            terminations=np.asarray(b["terminations"], dtype=bool),
            truncations=np.asarray(b["truncations"], dtype=bool),
            states=np.stack(b["states"]),
            tcp_pos=np.stack(b["tcp_pos"]), tcp_quat=np.stack(b["tcp_quat"]),
            command_pos=np.stack(b["command_pos"]), command_quat=np.stack(b["command_quat"]),
            infos=stack_infos(b["infos"]),
            env_id=spec.id, env_kwargs=kwargs, seed=self._seed, max_episode_steps=spec.max_episode_steps,
            control_dt=float(cell.control_dt), obs_fields=[asdict(f) for f in cell.obs_fields],
            provenance=self.provenance, source=self.source, model_hash=self._model_hash,
            model_xml=self._model_xml, policy=dict(self.policy),
        )
        if self.writer is None:
            self.completed.append(episode)
        else:
            self.entries.append(self.writer.add(episode))


def generate_demos(env_id: str, episodes: int, out: str | Path, *, skill: str = "expert", seed: int | None = None,
                   env_kwargs: dict[str, Any] | None = None, progress: bool = True) -> list[EpisodeEntry]:
    """Runs the cell's scripted expert for ``episodes`` episodes (seeds ``seed, seed+1, ...``) into ``out``.

    ``seed`` defaults to one past the largest seed the dataset ``out`` already holds (0 for a new
    one), so appending never records an episode twice. A dataset of another env id is refused
    before anything runs. Every episode is written, failures included: a dataset that hides the
    expert's failures overstates it. Filter by score (`skillcell.demos.scores`) before training instead.
    """
    # The expert as the registry declares it (a policies class, named by string: demos sit below policies).
    expert_class = cell_spec(env_id).expert
    if expert_class is None:
        raise ValueError(f"no scripted expert for {env_id}: its register_cell declares none")
    writer = DatasetWriter(out)
    writer.check_env(env_id)
    if seed is None:
        seed = max([e.seed for e in writer.entries() if e.seed is not None], default=-1) + 1
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        expert = expert_class(env, skill=skill, seed=seed)
        recorder = EpisodeRecorder(
            env, writer, source=f"scripted:{skill}", provenance=scripted_provenance(f"scripted-{skill}"),
            policy={"name": type(expert).__name__, "skill": skill, "seed": seed})
        bar = tqdm(range(episodes), desc="demos", unit="ep", disable=not progress, leave=False)
        for i in bar:
            obs, _ = recorder.reset(seed=seed + i)
            expert.reset()
            done = False
            while not done:
                obs, _, terminated, truncated, _ = recorder.step(expert(obs))
                done = terminated or truncated
            bar.set_postfix(success=f"{np.mean([e.success for e in recorder.entries]):.0%}")
        return recorder.entries
    finally:
        env.close()
