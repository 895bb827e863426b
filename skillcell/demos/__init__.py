"""Demonstrations: how a skilled worker's motion (or a scripted expert's) becomes robot data.

- `EpisodeRecorder` records any rollout of a cell into episode files (`Episode`, `DatasetWriter`,
  `DemoDataset`); `generate_demos` runs the cell's scripted expert into a dataset.
- `import_capture` turns a human tool capture (CSV + sidecar YAML, ``docs/capture_format.md``)
  into an executed robot episode with a feasibility report, in stages (`skillcell.demos.capture`:
  read, retarget, execute, assess).
- `replay_episode` checks episodes: ``state`` (bit-exact physics) or ``action`` (drift).
- `score_dataset` / `filter_dataset` score demonstrations per episode and per operator.
- `export_minari` writes a Minari dataset, `export_lerobot` a LeRobot v3.0 dataset.

``skillcell demos ...`` is the command line over these.
"""

from skillcell.demos.capture import CaptureSidecar, FrameTransform, ImportResult, import_capture, read_capture
from skillcell.demos.episode import (
    DatasetWriter,
    DemoDataset,
    Episode,
    EpisodeEntry,
    Provenance,
    load_episode,
    save_episode,
)
from skillcell.demos.errors import (
    CaptureError,
    CaptureFormatError,
    DatasetError,
    DemoError,
    InfeasibleCaptureError,
    MissingColumnsError,
    ModelMismatchWarning,
    NonNumericValueError,
    NonUnitQuaternionError,
    ReplayVersionWarning,
    ScaleError,
    TimestampError,
    ToolAxisError,
    TruncatedCaptureError,
)
from skillcell.demos.lerobot_io import export_lerobot
from skillcell.demos.minari_io import export_minari
from skillcell.demos.recorder import EpisodeRecorder, generate_demos
from skillcell.demos.replay import ReplayReport, replay_episode
from skillcell.demos.scores import (
    DatasetScores,
    SkillScore,
    filter_dataset,
    score_dataset,
    score_episode,
)

__all__ = [
    "CaptureError",
    "CaptureFormatError",
    "CaptureSidecar",
    "DatasetError",
    "DatasetScores",
    "DatasetWriter",
    "DemoDataset",
    "DemoError",
    "Episode",
    "EpisodeEntry",
    "EpisodeRecorder",
    "FrameTransform",
    "ImportResult",
    "InfeasibleCaptureError",
    "MissingColumnsError",
    "ModelMismatchWarning",
    "NonNumericValueError",
    "NonUnitQuaternionError",
    "Provenance",
    "ReplayReport",
    "ReplayVersionWarning",
    "ScaleError",
    "SkillScore",
    "TimestampError",
    "ToolAxisError",
    "TruncatedCaptureError",
    "export_lerobot",
    "export_minari",
    "filter_dataset",
    "generate_demos",
    "import_capture",
    "load_episode",
    "read_capture",
    "replay_episode",
    "save_episode",
    "score_dataset",
    "score_episode",
]
