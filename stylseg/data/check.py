"""``stylseg data check DIR``: is a paired folder usable? Counts, sizes, mask coverage, and
every bad file by name.

Every image and mask is decoded (a truncated file is a problem); ``deep=False`` (``--quick``)
reads only the image headers. The rules are the ones every stage applies
(:mod:`stylseg.data.validate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from .validate import coverage_stats, scan_paired


@dataclass
class CheckReport:
    """Result of :func:`check_folder`.

    ``sizes``: ``{"WxH": count}`` of the images; ``coverage_*``: share of mask pixels that
    are lesion (over readable masks); ``problems``: one line per bad file, naming it.
    """

    root: str
    n_pairs: int = 0
    n_images: int = 0
    n_masks: int = 0
    sizes: Dict[str, int] = field(default_factory=dict)
    coverage_mean: float = float("nan")
    coverage_min: float = float("nan")
    coverage_max: float = float("nan")
    n_empty_masks: int = 0
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        sizes = ", ".join(f"{k} ({v})" for k, v in sorted(self.sizes.items(), key=lambda kv: -kv[1])[:6])
        if len(self.sizes) > 6:
            sizes += f" ... ({len(self.sizes)} sizes)"
        lines = [f"{self.root}: {self.n_pairs} pairs ({self.n_images} images, {self.n_masks} masks)",
                 f"  image sizes (WxH): {sizes or '-'}"]
        if self.n_masks:
            lines.append(f"  mask coverage: mean {self.coverage_mean:.3f}, min {self.coverage_min:.3f}, "
                         f"max {self.coverage_max:.3f}; empty masks: {self.n_empty_masks}")
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s):")
            lines += [f"    {p}" for p in self.problems]
        else:
            lines.append("  OK")
        return "\n".join(lines)


def check_folder(root: os.PathLike, require_nonempty_masks: bool = False, deep: bool = True) -> CheckReport:
    """Check a paired folder ``root/images`` + ``root/masks`` and report every problem.

    The rules are those every stage applies (:func:`stylseg.data.validate.scan_paired`, ``use="check"``):
    missing folder or subfolder, empty folder, image without a mask, mask without an image, several
    files with one stem, unreadable or truncated image or mask, image/mask size mismatch, and masks
    that are all empty; with ``require_nonempty_masks`` every empty mask is a problem. ``deep=False``
    reads only the image headers (faster; misses truncated images). Never raises for a bad folder:
    the report lists it.
    """
    scan = scan_paired(root, use="check", deep=deep)
    rep = CheckReport(root=str(Path(root)), n_images=scan.n_images, n_masks=scan.n_masks, sizes=dict(scan.sizes))
    # with require_nonempty_masks each empty mask is named instead of the all-empty summary
    rep.problems = [p.text for p in scan.problems if not (require_nonempty_masks and p.kind == "all_empty")]
    rep.n_pairs = len(scan.pairs)
    rep.coverage_mean, rep.coverage_min, rep.coverage_max, rep.n_empty_masks = coverage_stats(scan)
    if require_nonempty_masks:
        for (ip, mp), c in zip(scan.pairs, scan.coverage):
            if c == 0.0:
                rep.problems.append(f"{mp}: empty mask (no lesion pixel)")
    return rep
