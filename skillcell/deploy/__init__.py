"""Deployment: what leaves simulation for the robot, and the gate that decides whether it may.

- `skillcell.deploy.envelope`: the cell's safety envelope (``envelope.yaml``), checked every control
  step in evaluation and filtering every command on the robot.
- `skillcell.deploy.export`: ONNX export of an SB3 policy (or a residual run, base + residual in one
  graph) from raw observation to physical command.
- `skillcell.deploy.runner`: the exported policy run as on hardware: driver, envelope filter, watchdog.
- `skillcell.deploy.gate`: ``skillcell gate``, the pre-hardware gate and its ``gate.yaml`` record.

Deployment reads policies (`skillcell.policies`), never the reverse.
"""

__all__: list[str] = []
