"""The KeyedShaft review preset: the force arrow, and the key's angle to the keyway in the metric strip."""

from __future__ import annotations

from skillcell.review.overlays import CellReview, MetricSpec

__all__ = ["keyed_shaft_review"]


def keyed_shaft_review(cell) -> CellReview:
    """Assembly as PegInsert's preset (forces red past the rated force, amber past the jam force), plus the
    key: its angle to the keyway (amber outside the key clearance's capture window, where the key
    lands on the hub face), whether it is in the keyway, and how far the shaft has turned searching."""
    limit, jam = cell.config.limits.rated_insertion_force_n, cell.config.task.jam_force_n
    budget_mm = cell.penetration_budget * 1e3
    window_deg = cell.key_capture_window_deg
    metrics = [
        MetricSpec("depth_mm", "depth", "mm"),
        MetricSpec("key_angle_deg", "key", "deg", fmt="{:+.2f}", warn=(-window_deg, window_deg)),
        MetricSpec("key_engaged", "keyway", flag=True, on_off=("in", "out")),
        MetricSpec("search_rotation_deg", "turned", "deg", fmt="{:.0f}"),
        MetricSpec("lateral_error_mm", "lateral", "mm", fmt="{:.2f}"),
        MetricSpec("axial_force_n", "axial F", "N", band=(-limit, limit), warn=(-jam, jam)),
        MetricSpec("axial_torque_nm", "axial T", "N*m", fmt="{:+.2f}"),
        MetricSpec("peak_insertion_force_n", "peak |F|", "N", band=(0.0, limit), warn=(0.0, jam)),
        MetricSpec("jammed", "jam", flag=True, on_off=("JAMMED", "no"), bad_when_true=True),
        MetricSpec("penetration_mm", "penetr.", "mm", fmt="{:.3f}", band=(0.0, budget_mm)),
    ]
    return CellReview(camera="closeup", metrics=metrics,
                      series=["depth_mm", "key_angle_deg", "shaft_rotation_deg", "axial_force_n", "axial_torque_nm"],
                      force_arrow=True, force_warn_n=jam, force_limit_n=limit, score_key="peak_insertion_force_n")
