"""Episode-parallel work by seed: in this process, or as Ray core tasks on this machine's cores or a cluster.

`map_seeds` runs a `SeedTask` for every seed and returns the results in seed order (`iter_seeds`
yields them in that order as soon as they are in). A `SeedTask` is a small picklable
description (an env id and its keywords, a policy spec: no env, no model); what it builds from
that (`SeedTask.setup`: the env, the policy) is built once per process and reused for every seed
that process runs (`SeedTask.run`), as one process running all the seeds in turn would.

``workers=1`` and no ``address``: everything runs here, in order, and Ray is not imported.
Otherwise every seed is a Ray task (``ray.remote``): on a local Ray instance with ``workers``
CPUs, started for the call and stopped after it, or on the cluster at ``address`` (``"auto"``:
the one ``ray start`` runs on this machine), at most ``workers`` seeds at a time when given. A
Ray instance already running in this process (``ray.init`` by the caller, or a `session` around
several calls, which then share one Ray start) is used as it is.

A task's result depends on its seed alone (each episode resets its env with its seed), so the
results are the same for any worker count. A worker process that dies (killed, out of memory, a
crash in native code) has its seed run again on another worker, up to ``max_retries`` times;
after that, or when a task raises, `SeedFailedError` names the seed. ``task.setup`` is tried here
first (unless ``check=False``: a caller that checked its input already), so that bad input (an
unknown env, a skill the expert does not have) fails at once, with its own error, before any
worker starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm

__all__ = ["ClusterUnavailableError", "ParallelError", "SeedFailedError", "SeedTask", "iter_seeds", "map_seeds",
           "session"]

R = TypeVar("R")

#: What workers need to find the robot models and render headless; a cluster's workers get the driver's values.
PASSED_ENV_VARS = ("MENAGERIE_ROOT", "MUJOCO_GL")
MAX_RETRIES = 3


class SeedTask(Protocol[R]):
    """Work for one seed, built from a picklable description (the task object itself)."""

    def setup(self) -> Any:
        """What every seed's run needs (the env, the policy); built once per process."""

    def run(self, state: Any, seed: int) -> R:
        """One seed's work with the ``state`` of `setup`; returns a picklable record."""

    def close(self, state: Any) -> None:
        """Releases ``state`` (closes the env)."""


class ParallelError(RuntimeError):
    """Episode-parallel work could not be done."""


class ClusterUnavailableError(ParallelError):
    """No Ray cluster at the given address."""


class SeedFailedError(ParallelError):
    """One seed's task raised, or its worker died more often than it may be retried."""

    def __init__(self, seed: int, reason: str):
        super().__init__(f"seed {seed}: {reason}")
        self.seed = seed


@contextlib.contextmanager
def session(*, workers: int | None = 1, address: str | None = None) -> Iterator[None]:
    """Ray, started (or connected) once for every `map_seeds` call inside, and stopped after; nothing for 1 worker."""
    if _local(workers, address):
        yield
        return
    started = _start_ray(workers, address)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def _local(workers: int | None, address: str | None) -> bool:
    return address is None and (workers or 1) == 1


def map_seeds(task: SeedTask[R], seeds: Sequence[int], *, workers: int | None = 1, address: str | None = None,
              progress: bool = False, desc: str = "episodes", status: Callable[[R], str] | None = None,
              max_retries: int = MAX_RETRIES, check: bool = True) -> list[R]:
    """``[task.run(state, seed) for seed in seeds]``, spread over workers; see the module docstring."""
    return [result for _, result in iter_seeds(task, seeds, workers=workers, address=address, progress=progress,
                                               desc=desc, status=status, max_retries=max_retries, check=check)]


def iter_seeds(task: SeedTask[R], seeds: Sequence[int], *, workers: int | None = 1, address: str | None = None,
               progress: bool = False, desc: str = "episodes", status: Callable[[R], str] | None = None,
               max_retries: int = MAX_RETRIES, check: bool = True) -> Iterator[tuple[int, R]]:
    """``(seed, result)`` in the order of ``seeds``, each as soon as it and every one before it are done.

    ``workers``: 1 runs here; N > 1 on a local Ray instance of N CPUs; with ``address``, at most N
    at a time on that cluster (``None``: as many as it schedules). ``status(result)``, called for
    every result in seed order: the progress bar's postfix after it.
    """
    seeds = [int(s) for s in seeds]
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be at least 0, got {max_retries}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must not repeat: results are keyed by seed")
    bar = tqdm(total=len(seeds), desc=desc, unit="ep", disable=not progress, leave=False)
    try:
        local = _local(workers, address)
        results = _in_process(task, seeds) if local else _on_ray(task, seeds, workers, address, max_retries, check)
        for seed, result in results:
            bar.update(1)
            if status is not None:
                bar.set_postfix_str(status(result))
            yield seed, result
    finally:
        bar.close()


def _in_process(task: SeedTask[R], seeds: list[int]) -> Iterator[tuple[int, R]]:
    state = task.setup()
    try:
        for seed in seeds:
            yield seed, task.run(state, seed)
    finally:
        task.close(state)


# ---------------------------------------------------------------------- Ray

# In a worker process: the task whose state it holds, so that its next seeds reuse the env.
_worker_state: tuple[str, Any, Any] | None = None


def _run_in_worker(token: str, task: SeedTask[R], seed: int) -> R:
    global _worker_state
    if _worker_state is None or _worker_state[0] != token:
        if _worker_state is not None:  # a later call's task: the earlier one's env goes
            _worker_state[1].close(_worker_state[2])
            _worker_state = None
        _worker_state = (token, task, task.setup())
    return _worker_state[1].run(_worker_state[2], seed)


def _start_ray(workers: int | None, address: str | None) -> bool:
    """Connects to (or starts) Ray unless this process already did; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    env_vars = {k: os.environ[k] for k in PASSED_ENV_VARS if k in os.environ}
    try:
        ray.init(address=address, num_cpus=None if address is not None else workers, include_dashboard=False,
                 logging_level=logging.WARNING, runtime_env={"env_vars": env_vars} if env_vars else None)
    except ConnectionError as exc:
        raise ClusterUnavailableError(f"no Ray cluster at --address {address}: {exc}") from None
    return True


def _on_ray(task: SeedTask[R], seeds: list[int], workers: int | None, address: str | None,
            max_retries: int, check: bool) -> Iterator[tuple[int, R]]:
    if check:
        task.close(task.setup())  # bad input fails here, with its own error, before a worker starts
    import ray
    from ray.exceptions import RayTaskError

    started = _start_ray(workers, address)
    try:
        remote = ray.remote(num_cpus=1, max_retries=max_retries)(_run_in_worker)
        token, task_ref = uuid.uuid4().hex, ray.put(task)
        limit = len(seeds) if workers is None else workers
        pending: dict[Any, int] = {}
        results: dict[int, R] = {}
        submitted = emitted = 0
        try:
            while emitted < len(seeds):
                while submitted < len(seeds) and len(pending) < limit:
                    pending[remote.remote(token, task_ref, seeds[submitted])] = submitted
                    submitted += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    try:
                        results[index] = ray.get(ref)
                    except RayTaskError as exc:
                        cause = exc.cause if exc.cause is not None else exc
                        first_line = (str(cause).strip().splitlines() or [""])[0]  # Ray appends the traceback
                        raise SeedFailedError(seeds[index], f"{type(cause).__name__}: {first_line}") from cause
                    except ray.exceptions.RayError as exc:  # the worker died on every attempt
                        raise SeedFailedError(seeds[index], f"its worker died on all {max_retries + 1} attempts "
                                                            f"({type(exc).__name__})") from None
                while emitted in results:
                    yield seeds[emitted], results.pop(emitted)
                    emitted += 1
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
