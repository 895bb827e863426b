"""Bad captures: each defect gets its specific error, naming where it is, and the output is untouched."""

import numpy as np
import pytest

from skillcell.demos import (
    CaptureFormatError,
    FrameTransform,
    MissingColumnsError,
    NonNumericValueError,
    NonUnitQuaternionError,
    ScaleError,
    TimestampError,
    TruncatedCaptureError,
    generate_demos,
    import_capture,
)
from skillcell.demos.synthetic import write_capture

ENV_ID = "skillcell/PegInsert-v0"


def _path(t):
    """A slow 20 mm line above the block, peg down, in the cell frame (m)."""
    s = np.clip(np.asarray(t) / 1.0, 0.0, 1.0)[:, None]
    start = np.array([0.45, 0.10, 0.96])
    return start + s * np.array([0.02, 0.0, 0.0]), np.tile([0.0, 1.0, 0.0, 0.0], (len(s), 1))


@pytest.fixture(scope="module")
def existing_dataset(tmp_path_factory):
    """An output folder that already holds a dataset: a bad import must not touch it."""
    out = tmp_path_factory.mktemp("bad") / "dataset"
    generate_demos(ENV_ID, 1, out, progress=False)
    return out


@pytest.fixture
def capture(tmp_path):
    """A valid capture (mm, 120 Hz, 1 s, 121 rows): returns (csv path, its lines)."""
    csv, _ = write_capture(tmp_path / "cap.csv", _path, 1.0, cell_id=ENV_ID, length_unit="mm",
                           capture_to_cell=FrameTransform(translation=(400.0, 100.0, 900.0)))
    return csv, csv.read_text().splitlines(keepends=True)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_refused(csv, existing_dataset, tmp_path, error, match):
    """The import raises ``error`` matching ``match`` and changes neither output folder."""
    before = snapshot(existing_dataset)
    for out in (existing_dataset, tmp_path / "new_dataset"):
        with pytest.raises(error, match=match) as info:
            import_capture(csv, out, progress=False)
        assert snapshot(existing_dataset) == before
        assert not (tmp_path / "new_dataset").exists()
    return info.value


def test_the_valid_capture_imports(capture, tmp_path):
    csv, _ = capture
    assert import_capture(csv, tmp_path / "ok", progress=False).feasible


def test_missing_columns(capture, existing_dataset, tmp_path):
    csv, lines = capture
    # Drop qz (the last pose column) from every row.
    csv.write_text("".join(",".join(line.rstrip("\n").split(",")[:7]) + "\n" for line in lines))
    error = expect_refused(csv, existing_dataset, tmp_path, MissingColumnsError, r"missing required columns \['qz'\]")
    assert error.line == 1


def test_non_numeric_row(capture, existing_dataset, tmp_path):
    csv, lines = capture
    fields = lines[41].split(",")
    fields[2] = "12,3".replace(",", ";")  # a locale's decimal comma turned into junk
    lines[41] = ",".join(fields)
    csv.write_text("".join(lines))
    error = expect_refused(csv, existing_dataset, tmp_path, NonNumericValueError, "line 42, column 'y'")
    assert "'12;3' is not a number" in str(error) and error.column == "y"


def test_nan_row(capture, existing_dataset, tmp_path):
    csv, lines = capture
    fields = lines[60].split(",")
    fields[4] = "NaN"  # a dropped tracker sample
    lines[60] = ",".join(fields)
    csv.write_text("".join(lines))
    error = expect_refused(csv, existing_dataset, tmp_path, NonNumericValueError, "line 61, column 'qw'")
    assert "not finite" in str(error)


def test_non_monotonic_timestamps(capture, existing_dataset, tmp_path):
    csv, lines = capture
    lines[30], lines[31] = lines[31], lines[30]  # two rows swapped, as merged streams do
    csv.write_text("".join(lines))
    error = expect_refused(csv, existing_dataset, tmp_path, TimestampError, "not monotonic")
    assert error.line == 32 and error.column == "t"


def test_duplicate_timestamps(capture, existing_dataset, tmp_path):
    csv, lines = capture
    t_before = lines[50].split(",")[0]
    fields = lines[51].split(",")
    fields[0] = t_before
    lines[51] = ",".join(fields)
    csv.write_text("".join(lines))
    error = expect_refused(csv, existing_dataset, tmp_path, TimestampError, "duplicate timestamp")
    assert error.line == 52 and f"t={float(t_before)!r}" in str(error)


def test_truncated_file(capture, existing_dataset, tmp_path):
    csv, _ = capture
    data = csv.read_bytes()
    csv.write_bytes(data[: len(data) - 40])  # cut in the middle of the last row, as a killed writer leaves it
    error = expect_refused(csv, existing_dataset, tmp_path, TruncatedCaptureError, "truncated")
    assert error.line == 122


def test_truncated_at_a_row_boundary_against_the_declared_samples(capture, existing_dataset, tmp_path):
    csv, lines = capture
    csv.write_text("".join(lines[:100]))  # whole rows lost: only the sidecar's sample count tells
    expect_refused(csv, existing_dataset, tmp_path, TruncatedCaptureError, "99 data rows, but the sidecar declares "
                                                                           "samples: 121")


def test_non_unit_quaternion(capture, existing_dataset, tmp_path):
    csv, lines = capture
    fields = lines[10].rstrip("\n").split(",")
    fields[4:8] = [str(2 * float(v)) for v in fields[4:8]]
    lines[10] = ",".join(fields) + "\n"
    csv.write_text("".join(lines))
    error = expect_refused(csv, existing_dataset, tmp_path, NonUnitQuaternionError, "norm 2.0000")
    assert error.line == 11


def test_millimetres_declared_as_metres(capture, existing_dataset, tmp_path):
    csv, _ = capture
    sidecar = csv.with_suffix(".yaml")
    sidecar.write_text(sidecar.read_text().replace("length_unit: mm", "length_unit: m"))
    error = expect_refused(csv, existing_dataset, tmp_path, ScaleError, "implausible scale for length_unit 'm'")
    assert "is the capture in mm?" in str(error)


def test_metres_declared_as_millimetres(tmp_path, existing_dataset):
    csv, sidecar = write_capture(tmp_path / "cap.csv", _path, 2.0, cell_id=ENV_ID, length_unit="m",
                                 capture_to_cell=FrameTransform(), position_noise_mm=0.0)
    sidecar.write_text(sidecar.read_text().replace("length_unit: m", "length_unit: mm"))
    expect_refused(csv, existing_dataset, tmp_path, ScaleError, "is the capture in m\\?")


def test_rows_of_the_wrong_width_and_empty_files(capture, existing_dataset, tmp_path):
    csv, lines = capture
    lines[5] = lines[5].rstrip("\n") + ",7\n"
    csv.write_text("".join(lines))
    expect_refused(csv, existing_dataset, tmp_path, CaptureFormatError, "line 6: row has 9 fields, the header has 8")
    csv.write_text("")
    expect_refused(csv, existing_dataset, tmp_path, CaptureFormatError, "empty")
