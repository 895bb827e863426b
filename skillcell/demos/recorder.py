"""`EpisodeRecorder`: a Gymnasium wrapper that turns any rollout of a cell into episode files.

Whatever drives the env (the scripted expert, a policy, the capture importer) goes through
``reset``/``step`` as usual; the recorder keeps what happened, with the MuJoCo integration state
and the controller's command at every step, and on the episode's last step hands a complete
`Episode` to a `DatasetWriter` (or keeps it, when no dataset is given). An episode cut short by a
``reset`` before it ended is dropped, so a dataset never holds partial episodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from skillcell.demos.episode import (
    DatasetWriter,
    Episode,
    EpisodeEntry,
    Provenance,
    model_hash,
    stack_infos,
)
from skillcell.envs.base import CellEnv
from skillcell.envs.registry import cell_spec
from skillcell.parallel import iter_seeds
from skillcell.rollout import rollout

__all__ = ["EpisodeRecorder", "ExpertDemoTask", "generate_demos", "scripted_provenance"]


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
        # Both of the model as built: the hash before a reset may edit the model (a tier's friction
        # and mass draws; a replay builds the env the same way and compares the hash before its
        # reset), the MJCF from the spec it compiled from, which those edits never reach.
        self._model_hash = model_hash(cell.model)
        self._model_xml = cell.mj_spec.to_xml()
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

    def restart_from_current_state(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts the recording afresh from the env's current MuJoCo state (`CellEnv.set_state`).

        For a rollout that must begin elsewhere than where ``reset`` put the robot (the capture
        importer moves the arm to the capture's first pose). Returns ``(obs, info)`` there.
        """
        if self._buffer is None:
            raise RuntimeError("call reset() first")
        cell = self.env.unwrapped
        obs, info = cell.set_state(cell.get_state())
        for key in self._buffer:
            self._buffer[key].clear()
        self._record(obs, info)
        return obs, info

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


@dataclass(frozen=True)
class ExpertDemoTask:
    """A `skillcell.parallel.SeedTask`: one episode of the cell's scripted expert, recorded.

    ``seed`` is the run's (the first episode's); each episode's expert is
    `ScriptedExpert.for_episode` of it and the episode's seed. The episode is returned, not
    written: one writer in the calling process writes every episode, in seed order.
    """

    env_id: str
    skill: str
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def expert_class(self) -> type:
        # The expert as the registry declares it (a policies class, named by string: demos sit below policies).
        expert_class = cell_spec(self.env_id).expert
        if expert_class is None:
            raise ValueError(f"no scripted expert for {self.env_id}: its register_cell declares none")
        return expert_class

    def setup(self) -> EpisodeRecorder:
        expert_class = self.expert_class()
        env = gym.make(self.env_id, **self.env_kwargs)
        try:
            expert_class(env, skill=self.skill, seed=self.seed)  # a skill level the expert does not have
        except ValueError:
            env.close()
            raise
        return EpisodeRecorder(env, source=f"scripted:{self.skill}",
                               provenance=scripted_provenance(f"scripted-{self.skill}"),
                               policy={"name": expert_class.__name__, "skill": self.skill, "seed": self.seed})

    def run(self, recorder: EpisodeRecorder, seed: int) -> Episode:
        expert = self.expert_class().for_episode(recorder, self.skill, self.seed, seed)
        rollout(recorder, expert, seed=seed)
        return recorder.completed.pop()

    def close(self, recorder: EpisodeRecorder) -> None:
        recorder.close()


def generate_demos(env_id: str, episodes: int, out: str | Path, *, skill: str = "expert", seed: int | None = None,
                   env_kwargs: dict[str, Any] | None = None, progress: bool = True, workers: int | None = 1,
                   address: str | None = None) -> list[EpisodeEntry]:
    """Runs the cell's scripted expert for ``episodes`` episodes (seeds ``seed, seed+1, ...``) into ``out``.

    ``seed`` defaults to one past the largest seed the dataset ``out`` already holds (0 for a new
    one), so appending never records an episode twice. A dataset of another env id is refused
    before anything runs. Every episode is written, failures included: a dataset that hides the
    expert's failures overstates it. Filter by score (`skillcell.demos.scores`) before training instead.

    ``workers``, ``address``: episodes run in parallel by seed (`skillcell.parallel.map_seeds`);
    the episodes are written here, in seed order, as soon as they and the ones before are in, so
    the dataset is the same for any worker count.
    """
    writer = DatasetWriter(out)
    writer.check_env(env_id)
    if seed is None:
        seed = max([e.seed for e in writer.entries() if e.seed is not None], default=-1) + 1
    task = ExpertDemoTask(env_id, skill, seed, dict(env_kwargs or {}))
    entries: list[EpisodeEntry] = []

    def status(episode: Episode) -> str:
        return f"success={(sum(e.success for e in entries) + episode.success) / (len(entries) + 1):.0%}"

    for _, episode in iter_seeds(task, range(seed, seed + episodes), workers=workers, address=address,
                                 progress=progress, desc="demos", status=status):
        entries.append(writer.add(episode))
    return entries
