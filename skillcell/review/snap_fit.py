"""The SnapFit cell's review preset: the force arrow, the latch's deflection, the click and the latch."""

from __future__ import annotations

import math

from skillcell.review.overlays import CellReview, MetricSpec

__all__ = ["snap_fit_review"]


def snap_fit_review(cell) -> CellReview:
    """Forces red past the rated push (the gate's limit), amber while pushing (``task.press_force_n``);
    the strip flags the click and the latch (the scene marks the hook: green latched, amber deflected)."""
    limit, press = cell.config.limits.rated_insertion_force_n, cell.config.task.press_force_n
    budget_mm = cell.penetration_budget * 1e3
    engage_deg = math.degrees(cell.engagement_angle)
    metrics = [
        MetricSpec("seated_depth_mm", "depth", "mm", fmt="{:.2f}"),
        MetricSpec("axial_force_n", "axial F", "N", band=(-limit, limit), warn=(-press, press)),
        MetricSpec("peak_insertion_force_n", "peak |F|", "N", band=(0.0, limit), warn=(0.0, press)),
        MetricSpec("latch_deflection_deg", "latch", "deg", fmt="{:.2f}", warn=(-1.0, 0.5 * engage_deg)),
        MetricSpec("click_detected", "click", flag=True, on_off=("CLICK", "-")),
        MetricSpec("latched", "latched", flag=True, on_off=("LATCHED", "no")),
        MetricSpec("press_after_click_s", "press after click", "s", fmt="{:.2f}", band=(0.0, 0.3)),
        MetricSpec("penetration_mm", "penetr.", "mm", fmt="{:.3f}", band=(0.0, budget_mm)),
    ]
    return CellReview(camera="latch", metrics=metrics,
                      series=["seated_depth_mm", "axial_force_n", "contact_force_n", "latch_deflection_deg"],
                      force_arrow=True, force_warn_n=press, force_limit_n=limit, score_key="peak_insertion_force_n")
