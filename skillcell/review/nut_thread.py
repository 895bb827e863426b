"""The NutThread review preset: the turn count and spindle torque in the strip, the tool's force as an arrow."""

from __future__ import annotations

from skillcell.review.overlays import CellReview, MetricSpec

__all__ = ["nut_review"]

#: the force arrow turns amber past this axial push on the thread (N): the scorer's full-marks bound
FORCE_WARN_N = 5.0


def nut_review(cell) -> CellReview:
    """Threading: torque red past the cell's torque limit and amber below its seating torque once seated;
    cross-threading red; the F/T force arrow red at the envelope's force stop."""
    limits = cell.config.limits
    max_torque, seating = limits.max_torque_nm, limits.seating_torque_nm
    metrics = [
        MetricSpec("turns", "turns", fmt="{:.2f}"),
        MetricSpec("axial_advance_mm", "advance", "mm", fmt="{:.2f}"),
        MetricSpec("spindle_torque_nm", "torque", "N*m", fmt="{:.2f}", band=(-max_torque, max_torque)),
        MetricSpec("peak_spindle_torque_nm", "peak torque", "N*m", fmt="{:.2f}", band=(0.0, max_torque),
                   warn=(seating, max_torque), active_when="seated"),
        MetricSpec("spindle_speed_rpm", "spindle", "rpm", fmt="{:.0f}"),
        MetricSpec("axial_force_n", "axial F", "N", band=(-limits.tool_force_stop_n, limits.tool_force_stop_n),
                   warn=(-FORCE_WARN_N, FORCE_WARN_N)),
        MetricSpec("engaged", "thread", flag=True, on_off=("ENGAGED", "free")),
        MetricSpec("cross_threaded", "cross-thread", flag=True, on_off=("CROSS-THREADED", "no"), bad_when_true=True),
        MetricSpec("seated", "seat", flag=True, on_off=("SEATED", "no")),
    ]
    return CellReview(camera="side", metrics=metrics,
                      series=["turns", "axial_advance_mm", "spindle_torque_nm", "axial_force_n", "lateral_error_mm"],
                      force_arrow=True, force_warn_n=FORCE_WARN_N, force_limit_n=limits.tool_force_stop_n,
                      score_key="peak_spindle_torque_nm")
