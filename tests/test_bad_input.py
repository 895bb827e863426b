"""Bad input, as a user would give it: one line ``skillcell: ...``, exit 2, and nothing already saved changes.

Datasets cannot be mixed up or silently half-read (issue 11.8); user YAML, output paths and
existing outputs are checked before any work (issue 11.9).
"""

import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from skillcell.cli import main
from skillcell.config import MAX_QUOTED_CHARS, ConfigError, from_mapping, parse_yaml
from skillcell.demos import FrameTransform, generate_demos
from skillcell.demos.synthetic import write_capture
from skillcell.policies.train_config import TrainConfig

ENV_ID = "skillcell/PegInsert-v0"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# ~700 bytes that expand to 9**9 (387 million) strings: the "billion laughs".
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{k}: &{k} [{','.join(['*' + p] * 9)}]" for p, k in zip("abcdefgh", "bcdefghi", strict=True)]) + "\n"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what "nothing changed" is checked against."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *argv) -> tuple[int, str, str]:
    """``skillcell ARGV`` in this process: (exit code, stderr, stdout); a failure's error is one line."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("skillcell: ")]
        assert len(lines) == 1 and len(lines[0]) < 600, err
        return code, lines[0], out
    return code, err, out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_input") / "peg"
    generate_demos(ENV_ID, 2, out, seed=0, progress=False)
    return out


@pytest.fixture
def dataset(source, tmp_path):
    shutil.copytree(source, tmp_path / "peg")
    return tmp_path / "peg"


def corrupt_member(npz: Path, member: str) -> None:
    """Flips one bit in the middle of ``member``'s compressed bytes; the zip directory stays intact."""
    with zipfile.ZipFile(npz) as z:
        info = z.getinfo(member)
    data = bytearray(npz.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0x01
    npz.write_bytes(bytes(data))
    with zipfile.ZipFile(npz) as z:  # still a zip with the same members: only the CRC check can tell
        assert member in z.namelist()


def _tool_path(t):
    s = np.clip(np.asarray(t) / 2.0, 0.0, 1.0)[:, None]
    return np.array([0.45, 0.10, 0.96]) + s * [0.0, 0.02, 0.0], np.tile([0.0, 1.0, 0.0, 0.0], (len(s), 1))


def _capture(folder):
    return write_capture(folder / "cap.csv", _tool_path, 1.0, cell_id=ENV_ID, capture_to_cell=FrameTransform())[0]



# ---------------------------------------------------------------------- 8. datasets cannot be mixed up

def test_generate_into_a_dataset_of_another_cell_names_both(dataset, capsys):
    before = snapshot(dataset)
    code, err, _ = run(capsys, "demos", "generate", "skillcell/WeldSeam-v0", "--episodes", "1", "--out", dataset,
                    "--no-progress")
    assert code == 2
    assert "skillcell/PegInsert-v0" in err and "skillcell/WeldSeam-v0" in err and str(dataset) in err
    assert snapshot(dataset) == before


def test_appending_continues_after_the_seeds_used_unless_seed_is_given(dataset, capsys):
    before = snapshot(dataset)
    code, _, out = run(capsys, "demos", "generate", ENV_ID, "--episodes", "2", "--out", dataset, "--no-progress")
    assert code == 0 and "seeds 2..3" in out
    entries = yaml.safe_load((dataset / "dataset.yaml").read_text())["episodes"]
    assert [e["seed"] for e in entries] == [0, 1, 2, 3]
    assert run(capsys, "demos", "generate", ENV_ID, "--episodes", "1", "--seed", "1", "--out", dataset,
               "--no-progress")[0] == 0
    entries = yaml.safe_load((dataset / "dataset.yaml").read_text())["episodes"]
    assert [e["seed"] for e in entries] == [0, 1, 2, 3, 1]  # an explicit --seed is the user's choice
    after = snapshot(dataset)
    assert all(after[name] == data for name, data in before.items() if name.startswith("episodes/"))


def test_score_out_into_a_non_empty_folder_needs_force(dataset, tmp_path, capsys):
    out = tmp_path / "selected"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    code, err, _ = run(capsys, "demos", "score", dataset, "--min-score", "0.5", "--out", out, "--no-save",
                    "--no-progress")
    assert code == 2 and f"{out}: the folder is not empty" in err and "--force" in err
    assert snapshot(out) == {"notes.txt": b"keep me\n"}

    assert run(capsys, "demos", "score", dataset, "--min-score", "0.5", "--out", out, "--no-save", "--force",
               "--no-progress")[0] == 0
    assert (out / "notes.txt").read_text() == "keep me\n"
    assert len(yaml.safe_load((out / "dataset.yaml").read_text())["episodes"]) == 2


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_episode_files_without_a_manifest_are_an_error_naming_them(dataset, capsys, damage):
    manifest = dataset / "dataset.yaml"
    if damage == "empty":
        manifest.write_text("")
    else:
        manifest.unlink()
    before = snapshot(dataset)
    code, err, _ = run(capsys, "demos", "replay", dataset, "--no-progress")
    assert code == 2  # it used to replay nothing and pass
    assert f"{manifest} is {damage}" in err and "episodes/episode_000000.npz" in err
    assert "episodes/episode_000001.npz" in err
    assert snapshot(dataset) == before


def test_a_crc_error_inside_an_episode_names_the_file(dataset, capsys):
    episode = dataset / "episodes" / "episode_000001.npz"
    corrupt_member(episode, "states.npy")
    before = snapshot(dataset)
    code, err, _ = run(capsys, "demos", "replay", episode, "--no-progress")
    assert code == 2
    assert err == f"skillcell: {episode}: damaged episode archive (Bad CRC-32 for file 'states.npy')"
    assert snapshot(dataset) == before


def test_train_on_a_damaged_dataset_gives_the_same_one_line_error(dataset, tmp_path, capsys):
    corrupt_member(dataset / "episodes" / "episode_000001.npz", "actions.npy")
    before = snapshot(dataset)
    code, replay_err, _ = run(capsys, "demos", "replay", dataset, "--no-progress")
    assert code == 2 and "episode_000001.npz" in replay_err
    run_dir = tmp_path / "run"
    code, train_err, _ = run(capsys, "train", "--config", EXAMPLES / "train_peg_insert.yaml",
                          "--set", "demos.source=dataset", "--set", f"demos.path={dataset}", "--out", run_dir,
                          "--no-progress")
    assert code == 2 and train_err == replay_err
    assert not run_dir.exists() and snapshot(dataset) == before


# ---------------------------------------------------------------------- 9. user YAML

def _cell(path):
    from skillcell.envs.cells.peg_insert import PegInsertEnv

    PegInsertEnv(cell=str(path))


def _train(path):
    from skillcell.policies.train_config import load_train_config

    load_train_config(path)


def _criteria(path):
    from skillcell.deploy.gate import load_criteria

    load_criteria(user=path)


def _envelope(path):
    from skillcell.deploy.envelope import load_envelope

    load_envelope(path)


def _tiers(path):
    from skillcell.envs.tiers import load_tiers

    load_tiers(path)


def _sidecar(path):
    from skillcell.demos import import_capture

    import_capture(_capture(path.parent), path.parent / "never", sidecar=path, progress=False)


def _manifest(path):
    from skillcell.demos import DemoDataset

    path.rename(path.with_name("dataset.yaml"))
    DemoDataset(path.parent)


USER_YAML = [_cell, _train, _criteria, _envelope, _tiers, _sidecar, _manifest]


@pytest.mark.parametrize("load", USER_YAML, ids=lambda f: f.__name__.strip("_"))
def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path, load):
    path = tmp_path / "user.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 800
    with pytest.raises(ValueError) as caught:
        load(path)
    message = str(caught.value)
    assert "aliases expand to more than 10000 nodes" in message and "line 5" in message
    assert len(message) < 300 and "\n" not in message


@pytest.mark.parametrize("load", USER_YAML, ids=lambda f: f.__name__.strip("_"))
def test_a_duplicate_key_is_an_error_naming_it(tmp_path, load):
    path = tmp_path / "user.yaml"
    path.write_text("episodes: []\nseed_offset: 1\nepisodes: []\n")
    with pytest.raises(ValueError, match=r"line 3, column 1: duplicate key 'episodes' \(first on line 1\)"):
        load(path)


def test_duplicate_keys_and_bombs_in_set_values_are_one_line(capsys):
    code, err, _ = run(capsys, "expert", ENV_ID, "--episodes", "1", "--set", "workpiece={clearance_mm: 0.2, "
                    "clearance_mm: 0.9}")
    assert code == 2 and "--set 'workpiece': line 1, column 21: duplicate key 'clearance_mm' (first on line 1)" in err
    flow = "[" + ", ".join(["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + ["*a"] * 2000) + "]"
    code, err, _ = run(capsys, "expert", ENV_ID, "--episodes", "1", "--set", f"workpiece.clearance_mm={flow}")
    assert code == 2 and "aliases expand to more than" in err


def test_a_long_value_is_quoted_in_at_most_200_characters(capsys):
    code, err, _ = run(capsys, "expert", ENV_ID, "--episodes", "1", "--set", "workpiece.clearance_mm=" + "x" * 100_000)
    assert code == 2 and "workpiece.clearance_mm: expected a number, got 'xxx" in err
    assert len(err) < MAX_QUOTED_CHARS + 100
    with pytest.raises(ConfigError, match=r"^seed: expected an integer, got \[0, 1, 2") as caught:
        from_mapping(TrainConfig, {"seed": list(range(100_000))})
    assert len(str(caught.value)) < MAX_QUOTED_CHARS + 50


def test_every_yaml_read_goes_through_the_one_loader():
    """`skillcell.config.parse_yaml` is the only reader of YAML in the package; new code must not go around it."""
    root = Path(__file__).resolve().parents[1]
    readers = [f"{p.relative_to(root)}:{i}" for folder in ("skillcell", "envs", "policies")
               for p in (root / folder).rglob("*.py") if p.name != "config.py"
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if any(call in line for call in ("yaml.safe_load", "yaml.load(", "yaml.full_load", "yaml.unsafe_load"))]
    assert readers == []


def test_anchors_and_merges_for_shared_settings_still_work():
    data = parse_yaml("base: &base {clearance_mm: 0.3, chamfer_mm: 0.5}\n"
                      "tight:\n  <<: *base\n  clearance_mm: 0.15\n")
    assert data["tight"] == {"clearance_mm": 0.15, "chamfer_mm": 0.5}
    with pytest.raises(ConfigError, match="alias \\*a refers to a node that contains it"):
        parse_yaml("a: &a [1, *a]\n")


# ---------------------------------------------------------------------- 9. output paths

COMMANDS_WITH_OUT = {
    "demos generate": lambda d, t, out: ["demos", "generate", ENV_ID, "--episodes", "1", "--out", out],
    "demos import": lambda d, t, out: ["demos", "import", _capture(t), "--out", out],
    "demos score": lambda d, t, out: ["demos", "score", d, "--min-score", "0", "--no-save", "--out", out],
    "demos export": lambda d, t, out: ["demos", "export", d, "--format", "minari", "--out", out],
    "train": lambda d, t, out: ["train", "--config", EXAMPLES / "train_peg_insert.yaml", "--out", out],
    "render": lambda d, t, out: ["render", d, "--out", Path(out) / "video.mp4"],
    "report": lambda d, t, out: ["report", t, "--no-video", "--out", Path(out) / "report.html"],
    "gate": lambda d, t, out: ["gate", "scripted", "--env", ENV_ID, "--out", out],
    "quickstart": lambda d, t, out: ["quickstart", "--episodes", "1", "--out", out],
}


@pytest.mark.parametrize("command", COMMANDS_WITH_OUT)
def test_an_out_under_a_regular_file_is_one_line(dataset, tmp_path, capsys, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    argv = COMMANDS_WITH_OUT[command](dataset, tmp_path, blocker / "out")
    before = snapshot(tmp_path)
    code, err, _ = run(capsys, *argv, "--no-progress")
    assert code == 2 and f"{blocker} is a file, not a folder" in err
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_out_in_a_read_only_folder_is_one_line(dataset, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err, _ = run(capsys, "demos", "generate", ENV_ID, "--episodes", "1", "--out", locked / "ds",
                        "--no-progress")
    finally:
        locked.chmod(0o755)
    assert code == 2 and f"{locked} is not writable" in err and not any(locked.iterdir())


@pytest.fixture
def exported(dataset, tmp_path, capsys):
    root = tmp_path / "minari"
    assert run(capsys, "demos", "export", dataset, "--format", "minari", "--out", root, "--no-progress")[0] == 0
    return root


EXISTING_OUTPUT = {
    "render": lambda d, t: (["render", d, "--out", t / "video.mp4"], t / "video.mp4"),
    "report": lambda d, t: (["report", t, "--no-video", "--out", t / "report.html"], t / "report.html"),
    "gate": lambda d, t: (["gate", "scripted", "--env", ENV_ID, "--out", t / "gate"], t / "gate" / "gate.yaml"),
}


@pytest.mark.parametrize("command", EXISTING_OUTPUT)
def test_an_existing_output_is_only_replaced_with_force(dataset, tmp_path, capsys, command):
    argv, existing = EXISTING_OUTPUT[command](dataset, tmp_path)
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_text("last week's\n")
    code, err, _ = run(capsys, *argv, "--no-progress")
    assert code == 2 and err == f"skillcell: {existing}: exists already; pass --force to overwrite it"
    assert existing.read_text() == "last week's\n"


def test_an_existing_minari_export_is_only_replaced_with_force(dataset, exported, capsys):
    before = snapshot(exported)
    code, err, _ = run(capsys, "demos", "export", dataset, "--format", "minari", "--out", exported, "--no-progress")
    assert code == 2 and "skillcell/peginsert/peg-v0" in err and "--force" in err
    assert snapshot(exported) == before
    assert run(capsys, "demos", "export", dataset, "--format", "minari", "--out", exported, "--force",
               "--no-progress")[0] == 0
    assert not [p for p in exported.iterdir() if p.name.startswith(".staging")]


def test_quickstart_into_a_run_directory_needs_overwrite(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("phase,env_steps\nrl,4096\n")
    before = snapshot(run_dir)
    code, err, _ = run(capsys, "quickstart", "--episodes", "1", "--out", run_dir, "--no-progress")
    assert code == 2 and err == f"skillcell: {run_dir} already holds a run (metrics.csv); choose another out or " \
                                "pass --overwrite"
    assert snapshot(run_dir) == before


def test_report_with_force_replaces_the_page(dataset, tmp_path, capsys):
    page = tmp_path / "report.html"
    page.write_text("last week's\n")
    assert run(capsys, "report", tmp_path, "--no-video", "--out", page, "--force", "--no-progress")[0] == 0
    assert page.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("argv", [
    ["check", "skillcell/Nope-v0"],
    ["expert", "skillcell/Nope-v0", "--episodes", "1"],
    ["demos", "generate", "skillcell/Nope-v0", "--out", "x"],
], ids=["check", "expert", "demos-generate"])
def test_an_unknown_env_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, err, _ = run(capsys, *argv)
    assert code == 2 and err.startswith("skillcell: ") and "unknown env 'skillcell/Nope-v0'; registered: " in err
    assert ENV_ID in err and not any(tmp_path.iterdir())


def test_render_of_a_missing_file_says_it_does_not_exist(tmp_path, capsys):
    code, err, _ = run(capsys, "render", tmp_path / "missing.npz", "--out", tmp_path / "video.mp4", "--no-progress")
    assert code == 2 and err.startswith(f"skillcell: {tmp_path / 'missing.npz'}: no such file or folder")
    assert "policy" not in err.split("(")[0] and not (tmp_path / "video.mp4").exists()
