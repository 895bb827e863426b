"""`RunDir`: the run directory's layout in one place; missing files are named; a model finds its run."""

import pytest

from skillcell.policies.rundir import RunDir, RunDirError


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(RunDirError, match="not a folder"):
        RunDir.open(tmp_path / "nothing")
    run = RunDir.open(tmp_path)
    with pytest.raises(RunDirError, match=r"no model\.zip \(the final model"):
        run.final_model()
    assert run.config_mapping() is None and run.read_summary() is None


def test_a_model_finds_its_runs_normalization_and_residual_record(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config("env:\n  id: skillcell/PegInsert-v0\n  tier: D1\n  randomize: false\n")
    run.vecnormalize.write_bytes(b"stats")
    run.write_residual_record({"base": "bc_model.zip", "scale": 0.2})
    checkpoint = run.checkpoint(1000)
    assert RunDir.of_model(checkpoint) == run and RunDir.of_model(run.model) == run
    assert RunDir.vecnormalize_of(checkpoint) == run.vecnormalize
    assert RunDir.residual_record_of(run.model) == run.residual_record
    assert RunDir.residual_record_of(run.bc_model) is None  # the base of a residual run is not a residual
    assert RunDir.vecnormalize_of(tmp_path / "elsewhere" / "model.zip") is None
    assert run.env() == ("skillcell/PegInsert-v0", {"tier": "D1", "randomize": False})


def test_a_new_run_refuses_a_finished_one_unless_overwritten(tmp_path):
    run = RunDir.check_new(tmp_path)
    run.metrics_log(["env_steps"]).append({"env_steps": 1})
    assert run.read_metrics() == [{"env_steps": 1.0}]
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunDir.check_new(tmp_path)
    run.checkpoint(5).parent.mkdir()
    run.checkpoint(5).write_bytes(b"old")
    RunDir.check_new(tmp_path, overwrite=True).clear()
    assert not run.metrics.exists() and run.checkpoints() == []
