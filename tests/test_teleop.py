"""Teleoperation: devices (keyboard through a pseudo-terminal, SpaceMouse with a fake HID state,
scripts) and whole headless sessions recorded into datasets that replay bit for bit."""

import io
import os
import pty
import select
import sys
import termios
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import skillcell  # noqa: F401  (registers the cells)
from skillcell.demos import DatasetError, DemoDataset, replay_episode
from skillcell.teleop import (
    KeyboardDevice,
    ScriptDevice,
    SpaceMouseDevice,
    TeleopError,
    TeleopEvent,
    make_device,
    record_teleop,
)

WELD, PEG = "skillcell/WeldSeam-v0", "skillcell/PegInsert-v0"
DT = 0.05  # both cells' control period


def write_script(path, text):
    path.write_text(text)
    return f"script:{path}"


# ---------------------------------------------------------------------- a whole session


WELD_SCRIPT = """\
- {t: 0.0, delta: [0, 0, 0, 0, 0, 0]}                      # the operator waits: nothing is recorded
- {t: 0.25, delta: [0, 0, -0.3, 0, 0, 0]}                  # first motion: the episode starts (tick 5)
- {t: 0.5, task: {arc: on}, delta: [0.08, 0, 0, 0, 0, 0]}
- {t: 1.5, event: save}                                    # tick 30: 25 steps kept
- {t: 1.6, delta: [0, 0.2, 0, 0, 0, 0]}                    # episode 2 (seed 1) starts at tick 32
- {t: 2.0, event: discard}                                 # ... and is dropped at tick 40
- {t: 2.1, delta: [0.1, 0, 0, 0.05, 0, 0]}                 # seed 1 again, from tick 41 (held motion)
- {t: 2.6, event: save}                                    # tick 52: 11 steps kept
"""


@pytest.fixture(scope="module")
def weld_session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teleop")
    spec = write_script(folder / "weld.yaml", WELD_SCRIPT)
    status = io.StringIO()
    summary = record_teleop(WELD, spec, folder / "demos", episodes=3, operator="ana", realtime_factor=0,
                            viewer=False, preview=folder / "preview.png", status=status)
    return folder, summary, status.getvalue()


def test_a_scripted_session_records_what_the_operator_kept(weld_session):
    folder, summary, _ = weld_session
    assert summary.discarded == 1 and summary.quit  # the script quits after its last entry
    dataset = DemoDataset(folder / "demos")
    assert [(e.seed, e.steps, e.source, e.operator_id) for e in dataset.entries] == [
        (0, 25, "teleop:script", "ana"), (1, 11, "teleop:script", "ana")]
    first, second = dataset[0], dataset[1]
    for episode in (first, second):
        assert episode.provenance.operator_id == "ana"
        assert episode.provenance.source_device == "script:weld.yaml"
        assert episode.policy["device"] == "script:weld.yaml"
        assert episode.truncations[-1] and not episode.truncations[:-1].any()  # the operator's stop
    # What the device sent, channel by channel (the arc: -1 off, +1 on), from the first motion on.
    np.testing.assert_array_equal(first.actions[0], np.float32([0, 0, -0.3, 0, 0, 0, -1]))
    np.testing.assert_array_equal(first.actions[5], np.float32([0.08, 0, 0, 0, 0, 0, 1]))
    assert first.infos["arc_on"][6] and not first.infos["arc_on"][5]
    # Each episode starts with the task channels off, whatever the previous one left on; the
    # script's motion is held across the discard, so the rerun starts at once.
    np.testing.assert_array_equal(second.actions[0], np.float32([0, 0.2, 0, 0, 0, 0, -1]))
    np.testing.assert_array_equal(second.actions[1], np.float32([0.1, 0, 0, 0.05, 0, 0, -1]))


def test_teleoperated_episodes_replay_bit_exactly(weld_session):
    folder, _, _ = weld_session
    for episode in DemoDataset(folder / "demos"):
        state = replay_episode(episode, "state")
        assert state.passed and state.bit_exact and state.replayed_steps == episode.steps
        action = replay_episode(episode, "action")
        assert action.passed and action.bit_exact and action.max_drift_mm == 0.0


def test_the_session_shows_status_and_a_preview(weld_session):
    folder, _, status = weld_session
    lines = status.splitlines()
    rec = [line for line in lines if line.startswith("REC ep 1/3 seed 0 step 20 ")]
    assert rec, status
    assert "arc ON" in rec[0] and " mm | F " in rec[0] and "CTWD" in rec[0]  # the weld's live metrics
    assert "episode discarded; seed 1 again" in lines
    with Image.open(folder / "preview.png") as image:
        assert image.size[0] == 640 and image.size[1] > 480  # the frame and the metric strip under it
        assert np.asarray(image).std() > 10  # a rendered scene, not a blank image


def test_episodes_end_when_the_env_ends_them_at_the_control_rate(tmp_path):
    spec = write_script(tmp_path / "peg.yaml", "- {t: 0.0, delta: [0, 0, -0.2, 0, 0, 0]}\n"
                                               "- {t: 0.7, event: quit}\n")
    start = time.perf_counter()
    summary = record_teleop(PEG, spec, tmp_path / "demos", episodes=2, seed=7, operator="bo", viewer=False,
                            env_kwargs={"max_episode_steps": 6, "randomize": False}, status=io.StringIO())
    elapsed = time.perf_counter() - start
    assert [(e.seed, e.steps) for e in summary.entries] == [(7, 6), (8, 6)]  # the time limit, then the next seed
    episode = DemoDataset(tmp_path / "demos")[1]
    assert episode.truncations[-1] and episode.env_kwargs == {"randomize": False}
    assert elapsed >= 12 * DT  # real time: 12 control periods at least
    assert replay_episode(episode, "state").bit_exact


def test_a_dataset_of_another_cell_is_refused_before_anything_runs(tmp_path):
    spec = write_script(tmp_path / "peg.yaml", "- {t: 0.0, delta: [0, 0, -0.2, 0, 0, 0]}\n- {t: 0.1, event: save}\n")
    record_teleop(PEG, spec, tmp_path / "demos", realtime_factor=0, viewer=False, status=io.StringIO())
    before = (tmp_path / "demos" / "dataset.yaml").read_bytes()
    with pytest.raises(DatasetError, match="holds episodes of skillcell/PegInsert-v0, not skillcell/WeldSeam-v0"):
        record_teleop(WELD, spec, tmp_path / "demos", realtime_factor=0, viewer=False, status=io.StringIO())
    assert (tmp_path / "demos" / "dataset.yaml").read_bytes() == before


@pytest.fixture
def x_display():
    """A virtual X display (Xvfb) for the MuJoCo viewer; skipped where Xvfb is not installed."""
    import shutil
    import subprocess

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt install xvfb): no display to open the viewer on")
    server = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert select.select([server.stdout], [], [], 20)[0], "Xvfb did not start"
        yield f":{server.stdout.readline().decode().strip()}"
    finally:
        server.terminate()
        server.wait(10)


def test_the_viewer_follows_a_session_where_there_is_a_display(tmp_path, x_display):
    import subprocess

    spec = write_script(tmp_path / "weld.yaml", WELD_SCRIPT)
    code = ("import sys, skillcell; from skillcell.teleop import record_teleop; "
            f"s = record_teleop({WELD!r}, {spec!r}, 'demos', episodes=1, viewer=True, realtime_factor=4); "
            "print(s.report())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DISPLAY": x_display})
    assert done.returncode == 0, done.stderr  # viewer=True: a viewer that cannot open is an error
    assert "saved 1 episodes" in done.stdout and "no MuJoCo viewer" not in done.stdout
    episode = DemoDataset(tmp_path / "demos")[0]
    assert replay_episode(episode, "action").bit_exact  # the viewer only watched


def test_a_display_that_cannot_be_opened_is_a_message_or_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":987654")  # set, as over SSH without X forwarding, but not there
    spec = write_script(tmp_path / "peg.yaml", "- {t: 0.0, delta: [0, 0, -0.2, 0, 0, 0]}\n- {t: 0.2, event: save}\n")
    status = io.StringIO()
    summary = record_teleop(PEG, spec, tmp_path / "demos", realtime_factor=0, status=status)
    assert "no MuJoCo viewer" in status.getvalue() and len(summary.entries) == 1  # the status line carries on
    with pytest.raises(TeleopError, match="viewer: cannot open the MuJoCo viewer"):
        record_teleop(PEG, spec, tmp_path / "demos", realtime_factor=0, viewer=True, status=io.StringIO())
    assert len(DemoDataset(tmp_path / "demos")) == 1


# ---------------------------------------------------------------------- keyboard


@pytest.fixture
def terminal():
    """A pseudo-terminal: write keys to ``master``, the device reads ``slave`` as its terminal."""
    master, slave = pty.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def type_keys(master, slave, data: bytes):
    os.write(master, data)
    assert select.select([slave], [], [], 2.0)[0]
    time.sleep(0.02)  # let the line discipline pass every byte


def test_keyboard_keys_through_a_pty_become_deltas_and_events(terminal):
    master, slave = terminal
    now = [100.0]
    attrs = termios.tcgetattr(slave)
    device = KeyboardDevice(("arc",), fd=slave, clock=lambda: now[0])
    device.connect()
    assert not termios.tcgetattr(slave)[3] & (termios.ICANON | termios.ECHO)  # keys one by one, no echo
    assert device.read().delta.tolist() == [0.0] * 6  # nothing typed

    type_keys(master, slave, b"wa ")
    command = device.read()
    assert command.delta.tolist() == [0.2, 0.2, 0, 0, 0, 0] and command.task == {"arc": 1.0}
    now[0] += 0.05
    assert device.read().delta.tolist() == [0.2, 0.2, 0, 0, 0, 0]  # held for hold_s after the last byte
    now[0] += 0.06
    assert device.read().delta.tolist() == [0.0] * 6  # released

    type_keys(master, slave, b"+k\x1b[Au")  # faster; rotate -x; an arrow key (ignored); rotate +z
    command = device.read()
    assert device.speed == 0.5 and command.delta.tolist() == [0, 0, 0, -0.5, 0, 0.5]
    now[0] += 0.2
    type_keys(master, slave, b"--ws")  # slower twice; of two opposite keys the later wins
    command = device.read()
    assert device.speed == 0.1 and command.delta.tolist() == [-0.1, 0, 0, 0, 0, 0]

    type_keys(master, slave, b"\r")  # Enter (the terminal turns it into \n)
    assert device.read().events == {TeleopEvent.SAVE}
    type_keys(master, slave, b"\x7f")
    assert device.read().events == {TeleopEvent.DISCARD}
    type_keys(master, slave, b"\x1b")
    assert device.read().events == {TeleopEvent.QUIT}
    type_keys(master, slave, b" ")
    assert device.read().task == {"arc": -1.0}  # space toggles the arc off again

    device.disconnect()
    assert termios.tcgetattr(slave) == attrs  # the terminal is as it was


def test_a_person_at_a_terminal_drives_a_whole_session(tmp_path):
    """``skillcell teleop --device keyboard`` in a terminal (a pty): keys in, an episode out."""
    import subprocess

    master, slave = pty.openpty()
    command = [sys.executable, "-m", "skillcell", "teleop", PEG, "--device", "keyboard", "--out", "demos",
               "--operator", "cy", "--episodes", "1", "--no-viewer"]
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "200"})  # the status line is cut to the terminal's width
    os.close(slave)
    screen = bytearray()

    def watch(seconds, until=b""):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until in screen):
            if select.select([master], [], [], 0.02)[0]:
                try:
                    screen.extend(os.read(master, 4096))
                except OSError:  # the session ended and closed the terminal
                    return

    try:
        watch(60, until=b"move to start")
        for _ in range(10):  # e held: down, at the default 20 mm/s
            os.write(master, b"e")
            watch(0.04)
        watch(0.3)
        os.write(master, b"\r")  # enter: save
        assert proc.wait(30) == 0, screen.decode(errors="replace")
    finally:
        proc.kill()
        os.close(master)
    text = screen.decode(errors="replace")
    assert "REC ep 1/1 seed 0 step " in text and "jog 20 mm/s" in text and "\x1b[K" in text  # refreshed in place
    episode = DemoDataset(tmp_path / "demos")[0]
    assert episode.source == "teleop:keyboard" and episode.provenance.operator_id == "cy"
    assert episode.steps >= 5 and episode.truncations[-1]
    np.testing.assert_array_equal(episode.actions[0], np.float32([0, 0, -0.2, 0, 0, 0]))
    assert episode.tcp_pos[-1, 2] < episode.tcp_pos[0, 2] - 0.004  # the tool went down


def test_keyboard_refuses_a_stdin_that_is_not_a_terminal():
    read, write = os.pipe()
    try:
        with pytest.raises(TeleopError, match=r"not a terminal.*--device script:FILE"):
            KeyboardDevice(fd=read).connect()
    finally:
        os.close(read)
        os.close(write)


# ---------------------------------------------------------------------- SpaceMouse


class FakeSpaceMouse:
    """What ``pyspacemouse.open`` returns, with a state the test sets."""

    name = "SpaceMouse Compact"

    def __init__(self):
        self.state = SimpleNamespace(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
        self.led = []
        self.closed = False

    def read(self):
        return self.state

    def set_led(self, on):
        self.led.append(on)

    def close(self):
        self.closed = True


def test_spacemouse_axes_and_buttons_map_to_commands():
    hid = FakeSpaceMouse()
    device = SpaceMouseDevice(("arc",), speed=0.5, open_device=lambda: hid)
    with device:
        assert device.description == "spacemouse:SpaceMouse Compact"
        hid.state.x, hid.state.y, hid.state.z, hid.state.yaw = 0.8, -0.03, -1.0, 0.4  # y is inside the deadband
        command = device.read()
        assert command.delta.tolist() == [0.4, 0.0, -0.5, 0.0, 0.0, 0.2] and not command.events

        def click(*buttons):
            hid.state.buttons = [int(i in buttons) for i in range(2)]
            pressed = device.read()
            hid.state.buttons = [0, 0]
            return pressed, device.read()

        pressed, released = click(0)
        assert not pressed.events and pressed.task == {"arc": -1.0}  # buttons act on release
        assert released.task == {"arc": 1.0} and not released.events
        assert click(1)[1].events == {TeleopEvent.SAVE}
        hid.state.buttons = [1, 0]
        device.read()
        _, released = click(0, 1)  # the right one joins the held left one: a gesture of its own
        assert released.events == {TeleopEvent.DISCARD} and released.task == {"arc": 1.0}

        device.send_feedback({"recording": True, "force_n": 3.0})
        device.send_feedback({"recording": True})
        device.send_feedback({"recording": False})
        assert hid.led == [True, False]  # the LED follows the recording, written on changes only
    assert hid.closed and not device.is_connected


def test_spacemouse_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)  # an import of it fails as when not installed
    with pytest.raises(TeleopError, match=r'pyspacemouse is not installed; pip install "skillcell\[teleop\]"'):
        SpaceMouseDevice(("arc",)).connect()


# ---------------------------------------------------------------------- scripts and specs


def test_script_device_timing_and_lerobot_view(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("- {t: 0.0, delta: [0.5, 0, 0, 0, 0, 0]}\n- {t: 0.12, task: {arc: on}, event: save}\n")
    device = ScriptDevice(path, ("arc",), DT)
    device.connect()
    assert list(device.action_features) == ["tcp_dx", "tcp_dy", "tcp_dz", "tcp_drx", "tcp_dry", "tcp_drz", "arc"]
    actions = [device.get_action() for _ in range(3)]  # t = 0, 0.05, 0.10: the entry at 0.12 is not due
    assert actions[0] == {**dict.fromkeys(device.action_features, 0.0), "tcp_dx": 0.5, "arc": -1.0}
    assert device.get_teleop_events() == frozenset()
    assert device.get_action()["arc"] == 1.0  # t = 0.15
    assert device.get_teleop_events() == {TeleopEvent.SAVE}
    assert device.read().events == {TeleopEvent.QUIT}  # one read after the last entry


@pytest.mark.parametrize(("text", "message"), [
    ("- {t: 0, delta: [0, 0, 0]}\n", r"entry 0: delta must be 6 numbers in \[-1, 1\]"),
    ("- {t: 0, delta: [0, 0, 2, 0, 0, 0]}\n", r"entry 0: delta must be 6 numbers in \[-1, 1\]"),
    ("- {t: 1.0, event: save}\n- {t: 0.5, event: quit}\n", "entry 1: t must be a number of seconds, not below"),
    ("- {t: 0, task: {laser: on}}\n", "entry 0: unknown task channel 'laser' \\(arc\\)"),
    ("- {t: 0, task: {arc: 1}}\n", "entry 0: task.arc must be on or off"),
    ("- {t: 0, event: pause}\n", "entry 0: event must be one of save, discard, quit"),
    ("- {t: 0, speed: 2}\n", "entry 0: unknown key 'speed'"),
    ("{t: 0}\n", "a teleop script is a non-empty list"),
    ("- {t: 0, event: save}\n- {t: 0, event: save, event: quit}\n", "duplicate"),
])
def test_bad_scripts_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TeleopError, match=message) as info:
        ScriptDevice(path, ("arc",), DT)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("spec", "message"), [
    ("joystick", "unknown device 'joystick'; expected one of keyboard, spacemouse, script:FILE"),
    ("script", "needs a file: script:FILE"),
    ("keyboard:1", "unknown device 'keyboard:1'"),
])
def test_bad_device_specs_are_one_line_errors(spec, message):
    with pytest.raises(TeleopError, match=message):
        make_device(spec, ("arc",), DT)


def test_a_missing_script_is_named(tmp_path):
    with pytest.raises(TeleopError, match=r"nope\.yaml: cannot read the teleop script"):
        make_device(f"script:{tmp_path / 'nope.yaml'}", (), DT)


# ---------------------------------------------------------------------- the command line


def test_teleop_command_records_a_dataset_that_demos_replay_passes(tmp_path, capsys):
    from skillcell.cli import main

    spec = write_script(tmp_path / "weld.yaml", WELD_SCRIPT)
    out = tmp_path / "demos"
    code = main(["teleop", WELD, "--device", spec, "--out", str(out), "--operator", "ana", "--episodes", "1",
                 "--seed", "3", "--realtime-factor", "0", "--no-viewer", "--no-randomize",
                 "--set", "control.max_translation_mm=4.0"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "saved 1 episodes of skillcell/WeldSeam-v0 (teleop: script:weld.yaml, operator ana, seeds 3)" in printed
    episode = DemoDataset(out)[0]
    assert (episode.seed, episode.steps) == (3, 25)
    assert episode.env_kwargs["randomize"] is False  # the env options reach the cell and the record
    assert episode.env_kwargs["overrides"] == {"control": {"max_translation_mm": 4.0}}
    assert main(["demos", "replay", str(out), "--mode", "state", "--no-progress"]) == 0
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--device", "joystick"], "skillcell: --device: unknown device 'joystick'; expected one of keyboard"),
    (["--device", "keyboard"], "skillcell: keyboard: standard input is not a terminal"),
    (["--device", "spacemouse:x"], "skillcell: --device: unknown device 'spacemouse:x'"),
    (["--device", "keyboard", "--preview", "live.jpg"], "skillcell: --preview live.jpg: the preview is a PNG file"),
    (["--device", "keyboard", "--speed", "3"], "skillcell: speed must be in (0, 1]"),
])
def test_teleop_command_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    from skillcell.cli import main

    out = tmp_path / "demos"
    assert main(["teleop", PEG, "--out", str(out), "--no-viewer", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists()
