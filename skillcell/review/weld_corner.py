"""The WeldSeamCorner review preset: the weld cells' (every WPS metric against its band), seen from the corner."""

from __future__ import annotations

import dataclasses

from skillcell.review.overlays import CellReview, weld_review

__all__ = ["weld_corner_review"]


def weld_corner_review(cell) -> CellReview:
    """`weld_review` from the ``corner`` camera, outside the corner: the torch turning about it."""
    return dataclasses.replace(weld_review(cell), camera="corner")
