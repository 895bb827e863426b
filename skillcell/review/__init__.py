"""Review: videos and reports for the people who sign off a skill (issue 7).

- `skillcell.review.overlays`: overlay geoms drawn into the MuJoCo scene (tool trace, force arrow,
  plus the cell's own, e.g. the weld bead) and the metric strip under each frame, with
  out-of-spec values highlighted.
- `skillcell.review.sources`: what a video shows, one control step at a time: a stored episode
  (state replay) or a live rollout of a policy (an SB3 model or the scripted expert).
- `skillcell.review.video`: frames of one source, side by side pairs, atomic H.264 mp4 writing.
- `skillcell.review.report`: ``skillcell report RUN_DIR``, a self-contained HTML page.

The ``render`` and ``report`` commands are `skillcell.cli.review`.

Nothing here is imported by ``import skillcell``; the cell registry names the review presets by string.
"""

__all__: list[str] = []
