"""The WeldPipe review preset: the weld cells' strip, with what the arm takes to go round the pipe."""

from __future__ import annotations

from dataclasses import replace

from skillcell.review.overlays import CellReview, MetricSpec, weld_review

__all__ = ["pipe_review"]


def pipe_review(cell) -> CellReview:
    """`weld_review` seen from the ``pipe`` camera, plus wrist 3 (it winds once round with the pass), the
    joint-limit and reach margins and the wrist flips (red from the first)."""
    review = weld_review(cell)
    arm = [
        MetricSpec("wrist_3_deg", "wrist 3", "deg", fmt="{:.0f}"),
        MetricSpec("joint_limit_margin_deg", "joint margin", "deg", fmt="{:.0f}"),
        MetricSpec("reach_margin_mm", "reach margin", "mm", fmt="{:.0f}"),
        MetricSpec("wrist_flips", "wrist flips", fmt="{:.0f}", band=(0.0, 0.0)),
    ]
    return replace(review, camera="pipe", metrics=[*review.metrics, *arm],
                   series=[*review.series, "wrist_3_deg", "joint_limit_margin_deg", "reach_margin_mm"])
