"""Errors and warnings of `skillcell.demos`: each names the file, line, column or key at fault."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CaptureError",
    "CaptureFormatError",
    "DatasetError",
    "DemoError",
    "InfeasibleCaptureError",
    "MissingColumnsError",
    "ModelMismatchWarning",
    "NonNumericValueError",
    "NonUnitQuaternionError",
    "ReplayVersionWarning",
    "ScaleError",
    "TimestampError",
    "ToolAxisError",
    "TruncatedCaptureError",
]


class DemoError(ValueError):
    """Base class of the demonstration errors."""


class DatasetError(DemoError):
    """A dataset or episode file is missing, damaged, or not in the skillcell format."""


class CaptureError(DemoError):
    """A capture (CSV plus sidecar YAML) cannot be imported; nothing was written.

    ``path`` is the offending file, ``line`` the 1-based line number in it (the header is line 1)
    and ``column`` the column name, where they apply.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 column: str | None = None):
        self.path = Path(path) if path is not None else None
        self.line, self.column = line, column
        where = str(path) if path is not None else ""
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}" if where else message)


class CaptureFormatError(CaptureError):
    """The CSV is not a table: empty, no data rows, duplicate columns, or rows of the wrong width."""


class MissingColumnsError(CaptureError):
    """Required columns (``t, x, y, z, qw, qx, qy, qz``) are absent from the header."""


class NonNumericValueError(CaptureError):
    """A value is empty, not a number, NaN or infinite."""


class TimestampError(CaptureError):
    """Timestamps are duplicated or go backwards."""


class TruncatedCaptureError(CaptureError):
    """The file ends in the middle of a row, or has fewer rows than the sidecar declares."""


class NonUnitQuaternionError(CaptureError):
    """Orientation quaternions are not of unit length (wrong column order, or not a quaternion)."""


class ScaleError(CaptureError):
    """The path's size or speed is implausible for the declared ``length_unit`` (mm declared as m), or
    for the cell: mostly outside its workspace, or spanning a small part of its task (inches as mm)."""


class ToolAxisError(CaptureError):
    """The tool axis strays from the cell's nominal one on most samples: quaternions mis-read (x, y, z, w
    as w, x, y, z) or a wrong frame rotation."""


class InfeasibleCaptureError(CaptureError):
    """The capture cannot be executed at all (its first pose is out of the robot's reach)."""


class ReplayVersionWarning(UserWarning):
    """An episode is replayed under a different MuJoCo version than it was recorded with."""


class ModelMismatchWarning(UserWarning):
    """The env builds a different model (content hash) than the episode was recorded on."""
