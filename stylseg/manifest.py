"""The stylized-arm format shared by every stylizer (diffusion, recon, cheap baselines).

An arm folder holds paired ``images/`` + ``masks/`` (same stem, PNG, the profile's size)
and ``manifest.json``::

    {"arm": "histogram", "method": "histogram", "params": {...}, "style": "path/to/style.png",
     "source": "path/to/input", "size": 64, "substitute": null,
     "items": [{"name": "12", "image": "images/12.png", "mask": "masks/12.png",
                "source_image": ".../images/12.png"}, ...],
     "scores": {...}}

:class:`ArmWriter` writes items atomically and rewrites the manifest after each batch, so
an interrupted run resumes: items whose files and manifest entry exist are skipped. The manifest
records the input folder's file names and content (``source_fingerprint``); an arm made from other
input is refused (an arm whose images come from two inputs is wrong), unless ``overwrite``, which
starts it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from .data.io import write_image, write_mask
from .checkpoint import folder_fingerprint
from .utils import StylsegError, read_json, sha256_file, write_json

MANIFEST = "manifest.json"


class ArmWriter:
    def __init__(self, out: os.PathLike, arm: str, method: str, params: Mapping[str, Any],
                 source: os.PathLike, style: Optional[os.PathLike] = None, size: Optional[int] = None,
                 substitute: Optional[str] = None, overwrite: bool = False):
        self.out = Path(out)
        path = self.out / MANIFEST
        for p in (self.out / "images", self.out / "masks", path):
            if p.is_symlink():
                raise StylsegError(f"{p}: a symbolic link; an arm is written only into its own folder, never through "
                                   f"links (as archive extraction): remove the link, or choose another --out")
        if overwrite:
            import shutil

            for sub in ("images", "masks"):
                if (self.out / sub).is_dir():
                    shutil.rmtree(self.out / sub)
            path.unlink(missing_ok=True)  # last: a folder that could not be emptied keeps its manifest
        (self.out / "images").mkdir(parents=True, exist_ok=True)
        (self.out / "masks").mkdir(parents=True, exist_ok=True)
        style_sha = sha256_file(style) if style and Path(style).is_file() else None
        source_fp = folder_fingerprint(source) if Path(source).is_dir() else None
        fresh = {"arm": arm, "method": method, "params": dict(params), "source": str(source),
                 "source_fingerprint": source_fp, "style": str(style) if style else None, "style_sha256": style_sha,
                 "size": size, "substitute": substitute, "items": [], "scores": {}}
        if path.is_file():
            old = read_json(path)
            # paths are informational (a run folder may be moved or opened from notebooks/):
            # what must match is the method, its parameters and the style image's content
            same_style = (old.get("style_sha256") == style_sha if "style_sha256" in old
                          else Path(old.get("style") or "").name == Path(fresh["style"] or "").name)
            if old.get("method") != method or old.get("params") != fresh["params"] or not same_style:
                raise StylsegError(
                    f"{path}: this folder holds arm {old.get('arm')!r} made with other settings "
                    f"({_settings_diff(old, fresh, same_style)}); choose another --out, or pass --overwrite to make "
                    f"it again")
            old_fp = old.get("source_fingerprint")
            if old_fp is not None and source_fp is not None and old_fp != source_fp:
                raise StylsegError(
                    f"{path}: this arm was made from other input ({old.get('source')}: {old_fp.get('files')} files, "
                    f"content {old_fp.get('sha256', '')[:12]}) than {source} ({source_fp['files']} files, content "
                    f"{source_fp['sha256'][:12]}); its images would come from two inputs. Choose another --out, "
                    f"or pass --overwrite to make it again from {source}")
            old.update(source=fresh["source"], style=fresh["style"], style_sha256=style_sha,
                       source_fingerprint=source_fp or old_fp)
            self.manifest = old
        else:
            self.manifest = fresh
        self._done = {it["name"] for it in self.manifest["items"]
                      if _intact(self.out / "images" / f"{it['name']}.png", self.out / "masks" / f"{it['name']}.png")}
        self.manifest["items"] = [it for it in self.manifest["items"] if it["name"] in self._done]

    def done(self, name: str) -> bool:
        return name in self._done

    def add(self, name: str, image: np.ndarray, mask: np.ndarray, source_image: os.PathLike = "",
            extra: Optional[Mapping[str, Any]] = None) -> None:
        """Write one pair (RGB uint8 image, bool mask); call :meth:`flush` to save the manifest."""
        write_image(self.out / "images" / f"{name}.png", image)
        write_mask(self.out / "masks" / f"{name}.png", mask)
        item = {"name": name, "image": f"images/{name}.png", "mask": f"masks/{name}.png",
                "source_image": str(source_image)}
        if extra:
            item.update(extra)
        if name not in self._done:
            self.manifest["items"].append(item)
            self._done.add(name)

    def flush(self) -> Path:
        return write_json(self.out / MANIFEST, self.manifest)

    def set_scores(self, scores: Mapping[str, Any]) -> None:
        self.manifest.setdefault("scores", {}).update(scores)
        self.flush()


def _settings_diff(old: Mapping[str, Any], fresh: Mapping[str, Any], same_style: bool) -> str:
    """What differs between an arm's recorded settings and the asked-for ones, in words."""
    out = []
    if old.get("method") != fresh["method"]:
        out.append(f"method {old.get('method')!r} -> {fresh['method']!r}")
    if old.get("params") != fresh["params"]:
        keys = sorted(k for k in set(old.get("params") or {}) | set(fresh["params"])
                      if (old.get("params") or {}).get(k) != fresh["params"].get(k))
        out.append(f"parameters of method {fresh['method']!r}: {', '.join(keys) or '(all)'}")
    if not same_style:
        out.append(f"the style image {fresh['style']}: content {str(old.get('style_sha256'))[:12]} -> "
                   f"{str(fresh['style_sha256'])[:12]}")
    return "; ".join(out)


def _intact(image: Path, mask: Path) -> bool:
    """Whether an arm item's image and mask decode completely and have one size: a truncated or replaced file is
    made again on resume, never kept."""
    from .data.io import read_image, read_mask

    try:
        im, m = read_image(image), read_mask(mask)
    except StylsegError:
        return False
    return im.shape[:2] == m.shape


def read_manifest(folder: os.PathLike) -> Dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise StylsegError(f"{path}: no manifest; this folder was not written by a stylseg stylizer")
    return read_json(path)


def add_scores(folder: os.PathLike, scores: Mapping[str, Any]) -> None:
    m = read_manifest(folder)
    m.setdefault("scores", {}).update(scores)
    write_json(Path(folder) / MANIFEST, m)
