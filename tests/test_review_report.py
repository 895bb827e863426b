"""``skillcell report``: generic metrics.csv, valid self-contained HTML, existing files, Chromium renders it."""

import base64
import csv
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from skillcell.cli import main
from skillcell.demos import generate_demos
from skillcell.review.report import ReportOptions, build_report, read_metrics_csv

ENV_ID = "skillcell/PegInsert-v0"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Collects src/href values and checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.refs, self.tags, self.doctype = [], [], [], [], False

    def handle_decl(self, decl):
        self.doctype |= decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, value) for name, value in attrs if name in ("src", "href")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _check_html(path: Path) -> _Checker:
    checker = _Checker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    assert checker.doctype, "<!DOCTYPE html>"
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    for tag, ref in checker.refs:
        if ref.startswith("data:"):
            header, _, payload = ref.partition(",")
            data = base64.b64decode(payload, validate=True)
            if header.startswith("data:image/png"):
                assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert data, f"<{tag}> embeds no data"
        else:
            assert "://" not in ref, f"<{tag}> refers outside the page: {ref}"
            assert (path.parent / ref).is_file(), f"<{tag}> refers to a missing file: {ref}"
    return checker


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory laid out as `skillcell train` writes it (config, metrics.csv, sb3 log, summary),
    plus a folder of evaluation episodes; the demonstrations are named by the config."""
    root = tmp_path_factory.mktemp("report")
    run = root / "run"
    (run / "sb3").mkdir(parents=True)
    (run / "config.yaml").write_text(f"env:\n  id: {ENV_ID}\n  tier: null\ndemos:\n  source: dataset\n"
                                     f"  path: {root / 'demos'}\nrl:\n  algo: sac\n  steps: 20000\n")
    (run / "summary.yaml").write_text(f"env_id: {ENV_ID}\nalgorithm: sac\nenv_steps: 20000\n")
    rng = np.random.default_rng(0)
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["phase", "env_steps", "wall_time_s", "episodes", "success_rate", "success_ci_low",
                         "success_ci_high", "mean_return", "mean_length", "peak_insertion_force_n", "jam_time_s"])
        for i in range(12):
            rate = min(1.0, i / 10)
            writer.writerow(["bc" if i == 0 else "rl", i * 2000, 3.0 * i, 20, rate, max(0.0, rate - 0.2),
                             min(1.0, rate + 0.2), 10 + i + rng.normal(), 120 - i, 30 - i,
                             "" if i == 3 else max(0.0, 1 - i / 8)])
    with (run / "sb3" / "progress.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time/total_timesteps", "train/actor_loss", "train/ent_coef", "rollout/ep_rew_mean"])
        for i in range(1, 8):
            writer.writerow([i * 2000, 1.0 / i, 0.01, 10 + i])
    generate_demos(ENV_ID, 2, run / "eval", seed=20, progress=False)
    generate_demos(ENV_ID, 2, root / "demos", seed=40, progress=False)
    return run


def test_metrics_csv_is_read_generically(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("timesteps,loss,phase\n100,0.5,bc\n200,,rl\n\n300,0.25,rl\n")
    table = read_metrics_csv(path)
    assert table.rows == 3 and table.x_column() == "timesteps"
    assert np.isnan(table.numeric["loss"][1]) and table.text["phase"] == ["bc", "rl", "rl"]
    path.write_text("a,a\n1,2\n")
    with pytest.raises(ValueError, match="repeated"):
        read_metrics_csv(path)


def test_report_is_valid_html_and_every_referenced_file_exists(run_dir, tmp_path):
    out = tmp_path / "out" / "report.html"
    result = build_report(run_dir, out, ReportOptions(width=320, height=240))
    assert result.sections == ["learning curve", "training log", "configuration", "evaluation episodes",
                               "best and worst episode", "demonstrations"]
    checker = _check_html(out)
    images = [ref for tag, ref in checker.refs if tag == "img"]
    videos = [ref for tag, ref in checker.refs if tag == "video"]
    assert len(images) >= 5, "learning curve, other metrics, training log, time series, skill scores"
    assert len(videos) == 2, "best and worst episode"
    for ref in videos:
        reader = imageio.get_reader(out.parent / ref, format="FFMPEG")
        frames = [frame for frame in reader]
        reader.close()
        assert len(frames) > 30 and frames[0].shape[1] == 320
    text = out.read_text()
    for expected in ("Learning curve", "success_rate", "Evaluation episodes", "peak_insertion_force_n",
                     "Best and worst episode", "Demonstrations", "scripted-expert"):
        assert expected in text
    assert not list(out.parent.rglob(".*tmp*")), "no temporary files left"


def test_report_without_videos_or_episodes(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "metrics.csv", bare)
    out = tmp_path / "bare.html"
    result = build_report(bare, out, ReportOptions(videos=False))
    assert result.sections == ["learning curve"]
    assert any("no evaluation episodes" in n for n in result.notes)
    checker = _check_html(out)
    assert not [ref for tag, ref in checker.refs if tag == "video"]
    assert "no evaluation episodes" in out.read_text()
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_report_cli_embeds_videos_on_request(run_dir, tmp_path, capsys):
    out = tmp_path / "embedded.html"
    assert main(["report", str(run_dir), "--out", str(out), "--embed-videos", "--width", "160", "--height", "128",
                 "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    checker = _check_html(out)
    videos = [ref for tag, ref in checker.refs if tag == "video"]
    assert len(videos) == 2 and all(ref.startswith("data:video/mp4;base64,") for ref in videos)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_and_shows_the_plots(run_dir, tmp_path):
    out = tmp_path / "report.html"
    build_report(run_dir, out, ReportOptions(width=320, height=240))
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1280,2400",
             out.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": profile})
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"the page logged to the console: {console}"
    image = imageio.imread(shot)[..., :3].astype(int)
    assert image.shape[:2] == (2400, 1280)
    # matplotlib's first two line colours (#1f77b4, #d62728) are the curves: plots are on screen.
    blue = (np.abs(image - [31, 119, 180]).sum(axis=2) < 30).sum()
    red = (np.abs(image - [214, 39, 40]).sum(axis=2) < 30).sum()
    assert blue > 500 and red > 500, (blue, red)
    # The top of the page (title, learning curve) is not blank.
    assert image[:600].std() > 20


def test_out_of_spec_moments_are_bookmarked():
    from types import SimpleNamespace

    from skillcell.review.overlays import cell_review
    from skillcell.review.report import _bookmarks
    from skillcell.review.sources import make_review_env

    env = make_review_env(ENV_ID, {}, width=160, height=128)
    try:
        review = cell_review(env)
        limit = env.unwrapped.config.limits.rated_insertion_force_n
    finally:
        env.close()
    force = np.zeros(21)
    force[5:8] = limit + 10  # 0.25-0.40 s over the limit
    force[15] = limit + 1
    peak = np.maximum.accumulate(force)  # a running figure: never bookmarked
    episode = SimpleNamespace(steps=20, control_dt=0.05, infos={"contact_force_n": force,
                                                                "peak_insertion_force_n": peak})
    assert _bookmarks(episode, review) == ["0.25-0.40 s: |F|", "0.75-0.80 s: |F|"]


def test_report_rolls_out_the_final_model_with_its_observation_normalization(tmp_path):
    """No evaluation episodes: --rollouts runs model.zip (and vecnormalize.pkl) on the run's eval seeds."""
    import pickle

    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from skillcell.review.sources import load_policy

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"env:\n  id: {ENV_ID}\n  randomize: false\neval:\n  seed: 500\n")
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID)]), norm_reward=False)
    PPO("MlpPolicy", venv, n_steps=64, batch_size=32, seed=0, device="cpu").save(run / "model.zip")
    venv.venv = None  # as skillcell train saves it: the statistics without the env
    (run / "vecnormalize.pkl").write_bytes(pickle.dumps(venv))
    env = gym.make(ENV_ID)
    assert "normalized obs" in load_policy(run / "model.zip", env).name
    env.close()
    out = tmp_path / "report.html"
    result = build_report(run, out, ReportOptions(rollouts=2, videos=False))
    assert "evaluation episodes" in result.sections and "best and worst episode" in result.sections
    from skillcell.demos import DemoDataset

    rollouts = DemoDataset(tmp_path / "report_files" / "rollouts")
    assert [e.seed for e in rollouts.entries] == [500, 501]
    assert rollouts[0].env_kwargs.get("randomize") is False, "the env as the run configured it"
    _check_html(out)
    build_report(run, out, ReportOptions(rollouts=2, videos=False))
    assert len(DemoDataset(tmp_path / "report_files" / "rollouts")) == 2, "a second report replaces its rollouts"
