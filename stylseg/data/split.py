"""The run folder's data: source/target train/test splits, the style image(s) and ``split.json``.

:func:`prepare_run_data` materialises ``RUN/data/`` (see :mod:`stylseg.layout`) in one of
three ways:

* synthetic (default): the kind's source and target domains from :mod:`stylseg.data.synth`;
* given folders (``source=``, ``target=``, ``style=``): paired folders, split into
  train/test when they have no such subfolders;
* a paper-like protocol on real data (``protocol="paper-polyp"`` or ``"paper-skin"``),
  docs/method.md section 7 (the kit's interpretation where the paper is silent).

Every image is written at ``cfg.data.seg_size`` (images bilinear, masks nearest), every
split is listed in ``split.json``, and a second call with the same parameters returns at
once (missing files of an interrupted call are completed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils import StylsegError, read_json, write_json
from .io import list_images, natural_key, read_image, read_mask, resize_image, write_image

#: the version of split.json this kit writes; a run folder prepared with another is refused with one message.
#: 2: the paper-polyp target test set is the paper's 20 CVC-ColonDB frames (sequences 6, 7, 9), the style frame
#: comes from sequences 6 or 9, and the oracle trains on sequences other than 6, 7, 9 and 11.
SPLIT_VERSION = 2
PROTOCOLS = ("synthetic", "folders", "paper-polyp", "paper-skin")

#: CVC-ColonDB frame -> video sequence (../shared/data/README.md); (first, last, sequence)
COLONDB_SEQUENCES: Tuple[Tuple[int, int, int], ...] = (
    (1, 38, 1), (39, 60, 2), (61, 76, 3), (77, 97, 5), (98, 148, 6), (149, 155, 7), (156, 203, 9), (204, 208, 10),
    (209, 263, 11), (264, 273, 14), (274, 300, 15), (301, 320, 4), (321, 340, 8), (341, 360, 12), (361, 380, 13))

#: the polyp protocol: the paper's own 20 CVC-ColonDB test frames (identified by matching the prediction maps its
#: repository ships against every CVC-ColonDB mask), a style frame of the same sequences, and extra test sets
PAPER_POLYP = {
    "n_train": 178,  # CVC-ClinicDB training frames
    "block": 25,  # contiguous block length (CVC-ClinicDB: 612 frames of 29 sequences, ~21 per sequence)
    "heldout": (491, 612),  # CVC-ClinicDB frames held out as the source-domain test
    "test_frames": (125, 136, 140, 141, 142, 145, 149, 150, 160, 161, 162, 165, 166, 170, 174, 175, 176, 177, 189,
                    201),  # the paper's 20 test frames (sequences 6, 7 and 9)
    "style_sequences": (6, 9),  # the style frame: a frame of these sequences outside the test frames
    "seq11": (226, 263),  # an extra test set: the tail of sequence 11
    "oracle_excluded": (6, 7, 9, 11),  # sequences of any test set: never oracle training frames
}

#: the skin protocol (docs/method.md section 7): counts of the paper
PAPER_SKIN = {"n_source": 200, "n_test": 20, "n_target_train": 200, "min_L": 20.0, "thumb": 128}

Item = Tuple[str, Path, Optional[Path]]  # (name, image file, mask file)


def colondb_sequence(frame: int) -> int:
    """The CVC-ColonDB video sequence of a frame number (1-380)."""
    for a, b, s in COLONDB_SEQUENCES:
        if a <= frame <= b:
            return s
    raise StylsegError(f"CVC-ColonDB frame {frame} is outside 1-380; is this folder really CVC-ColonDB?")


# --------------------------------------------------------------------------- helpers
def _write_items(items: Sequence[Item], out: Path, size: int, progress: bool = True, desc: str = "",
                 written: Optional[dict] = None) -> None:
    from .layouts import copy_pairs

    copy_pairs(items, out, size=size, progress=progress, desc=desc, written=written)


def _complete(out: Path, names: Sequence[str]) -> bool:
    return all((out / "images" / f"{n}.png").is_file() and (out / "masks" / f"{n}.png").is_file() for n in names)


def _split_names(names: List[str], test_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    if not 0.0 < test_fraction < 1.0:
        raise StylsegError(f"data.test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if len(names) < 2:
        raise StylsegError(f"need at least 2 images to split into train and test, got {len(names)}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 7])
    order = rng.permutation(len(names))
    n_test = min(len(names) - 1, max(1, int(round(len(names) * test_fraction))))
    test = sorted((names[i] for i in order[:n_test]), key=natural_key)
    train = sorted((names[i] for i in order[n_test:]), key=natural_key)
    return train, test


def _items_of(folder: Path) -> Dict[str, Item]:
    from .layouts import detect_pairs

    return {n: (n, i, m) for n, i, m in detect_pairs(folder)}


def _frame_number(name: str, where: Path) -> int:
    try:
        return int(name)
    except ValueError:
        raise StylsegError(f"{where}: file {name!r} is not named by its frame number (1.png, 2.png, ...); the "
                           f"paper-polyp protocol needs CVC frame numbers as names") from None


# --------------------------------------------------------------------------- plans
def _plan_synthetic(layout, cfg, kind: str, styles: int, progress: bool):
    from .synth import default_domains, generate_domain, get_domain

    d = cfg.data
    src_dom = d.source_domain or default_domains(kind)[0]
    tgt_dom = d.target_domain or default_domains(kind)[1]
    get_domain(kind, src_dom), get_domain(kind, tgt_dom)
    if d.n_per_domain < 2:
        raise StylsegError(f"data.n_per_domain={d.n_per_domain}: synthetic data needs at least 2 images per domain "
                           f"(0 means 'all', which only applies to real data)")
    # different scene seeds for the two domains: target test scenes are never source training scenes
    seeds = {"source": d.seed, "target": d.seed + 100_003}
    params = {"protocol": "synthetic", "kind": kind, "source_domain": src_dom, "target_domain": tgt_dom,
              "n_per_domain": d.n_per_domain, "test_fraction": d.test_fraction, "synth_size": d.synth_size,
              "seg_size": d.seg_size, "data_seed": d.seed, "style_seed": cfg.seed, "styles": styles}

    def build():
        splits, sources = {}, {}
        for which, dom in (("source", src_dom), ("target", tgt_dom)):
            folder = layout.data / "synth" / f"{kind}_{dom}_n{d.n_per_domain}_s{d.synth_size}_seed{seeds[which]}"
            generate_domain(folder, kind=kind, domain=dom, n=d.n_per_domain, size=d.synth_size, seed=seeds[which],
                            progress=progress)
            items = _items_of(folder)
            train, test = _split_names(list(items), d.test_fraction, d.seed + (0 if which == "source" else 1))
            splits[f"{which}/train"] = [items[n] for n in train]
            splits[f"{which}/test"] = [items[n] for n in test]
            sources[which] = {"folder": str(folder), "kind": kind, "domain": dom, "seed": seeds[which]}
        return splits, sources, None

    return params, build


def _has_splits(folder: Path) -> bool:
    return (folder / "train" / "images").is_dir() or (folder / "test" / "images").is_dir()


def _plan_folders(layout, cfg, kind: str, source: str, target: str, style: str, styles: int):
    if not source or not target:
        missing = "source" if not source else "target"
        raise StylsegError(f"the {missing} folder is missing: give both a source folder (training domain, "
                           f"images/ + masks/) and a target folder (test domain), or neither for synthetic data")
    src, tgt = Path(source).expanduser().resolve(), Path(target).expanduser().resolve()
    sty = str(Path(style).expanduser().resolve()) if style else ""
    d = cfg.data
    params = {"protocol": "folders", "kind": kind, "source": str(src), "target": str(tgt), "style": sty,
              "test_fraction": d.test_fraction, "seg_size": d.seg_size, "data_seed": d.seed, "style_seed": cfg.seed,
              "styles": styles}

    def build():
        splits, sources = {}, {}
        for which, folder in (("source", src), ("target", tgt)):
            if _has_splits(folder):
                for sp in ("train", "test"):
                    if (folder / sp).is_dir():
                        splits[f"{which}/{sp}"] = list(_items_of(folder / sp).values())
                sources[which] = {"folder": str(folder), "split": "given (train/ and test/ subfolders)"}
            else:
                items = _items_of(folder)
                train, test = _split_names(list(items), d.test_fraction, d.seed + (0 if which == "source" else 1))
                splits[f"{which}/train"] = [items[n] for n in train]
                splits[f"{which}/test"] = [items[n] for n in test]
                sources[which] = {"folder": str(folder), "split": f"random, test_fraction {d.test_fraction}"}
        for key in ("source/train", "target/test"):
            if key not in splits:
                raise StylsegError(f"{src if key.startswith('source') else tgt}: no {key.split('/')[1]}/ subfolder; "
                                   f"give a folder with train/ and test/ subfolders or a single paired folder")
        return splits, sources, sty or None

    return params, build


def _find_polyp_roots(data_dir: str) -> Tuple[Path, Path]:
    if not data_dir:
        from ..utils import data_dir as default_data_dir

        data_dir = str(default_data_dir())
    base = Path(data_dir).expanduser()
    for cand in (base / "polyp", base, base / "TestDataset"):
        if (cand / "CVC-ClinicDB").is_dir() and (cand / "CVC-ColonDB").is_dir():
            return cand / "CVC-ClinicDB", cand / "CVC-ColonDB"
    raise StylsegError(
        f"{base}: CVC-ClinicDB and CVC-ColonDB not found; the paper-polyp protocol needs a folder holding "
        f"polyp/CVC-ClinicDB and polyp/CVC-ColonDB (or those two folders directly), each in a known layout "
        f"(images/ + masks/, PraNet's TestDataset, or the original releases); see `stylseg data list`")


def polyp_protocol_names(clinic: Sequence[int], colon: Sequence[int], seed: int, style_seed: int, styles: int = 1,
                         p: Optional[dict] = None) -> Dict[str, List[int]]:
    """Frame numbers of each split of the paper-polyp protocol (``docs/data.md``).

    ``clinic``/``colon``: the frame numbers present. Source train: ``n_train`` CVC-ClinicDB frames below the
    held-out range, taken as whole blocks of ``block`` consecutive frame numbers in a seeded random order (the last
    block cut to reach ``n_train``). Source test: CVC-ClinicDB 491-612. Target test: the paper's 20 CVC-ColonDB
    frames; ``target/test_seq11``: frames 226-263 (the tail of sequence 11); ``target/test_all``: every frame of the
    sequences the oracle never trains on (6, 7, 9, 11); target train (oracle): the frames of every other sequence.
    Style: ``styles`` frames of sequences 6 or 9 outside the test frames, drawn with ``style_seed``.
    """
    p = dict(PAPER_POLYP, **(p or {}))
    lo, hi = p["heldout"]
    pool = sorted(f for f in clinic if f < lo)
    blocks: Dict[int, List[int]] = {}
    for f in pool:
        blocks.setdefault((f - 1) // p["block"], []).append(f)
    order = np.random.default_rng([seed & 0xFFFFFFFF, 178]).permutation(sorted(blocks))
    train: List[int] = []
    for b in order:
        need = p["n_train"] - len(train)
        if need <= 0:
            break
        train.extend(blocks[int(b)][:need])
    if len(train) < p["n_train"]:
        raise StylsegError(f"CVC-ClinicDB has only {len(pool)} frames below {lo}; the protocol needs {p['n_train']}")
    colon_set = sorted(colon)
    test = [f for f in colon_set if f in set(p["test_frames"])]
    missing = sorted(set(p["test_frames"]) - set(test))
    if missing:
        raise StylsegError(f"CVC-ColonDB lacks the paper's test frames {missing}; the paper-polyp protocol needs all "
                           f"380 frames of the original release")
    style_pool = [f for f in colon_set if colondb_sequence(f) in p["style_sequences"] and f not in set(test)]
    if len(style_pool) < styles:
        raise StylsegError(f"CVC-ColonDB holds {len(style_pool)} style candidates (sequences "
                           f"{', '.join(map(str, p['style_sequences']))} outside the test frames), fewer than "
                           f"styles={styles}")
    pick = np.random.default_rng([style_seed & 0xFFFFFFFF, 11]).choice(len(style_pool), size=styles, replace=False)
    s0, s1 = p["seq11"]
    excluded = set(p["oracle_excluded"])
    return {
        "source/train": sorted(train),
        "source/test": [f for f in sorted(clinic) if lo <= f <= hi],
        "target/test": test,
        "target/test_seq11": [f for f in colon_set if s0 <= f <= s1],
        "target/test_all": [f for f in colon_set if colondb_sequence(f) in excluded],
        "target/train": [f for f in colon_set if colondb_sequence(f) not in excluded],
        "style": [style_pool[int(i)] for i in pick],
    }


def _plan_paper_polyp(layout, cfg, data_dir: str, styles: int):
    clinic_root, colon_root = _find_polyp_roots(data_dir)
    d = cfg.data
    params = {"protocol": "paper-polyp", "kind": "polyp", "clinic": str(clinic_root.resolve()),
              "colon": str(colon_root.resolve()), "seg_size": d.seg_size, "data_seed": d.seed,
              "style_seed": cfg.seed, "styles": styles, "protocol_params": {k: list(v) if isinstance(v, tuple) else v
                                                                           for k, v in PAPER_POLYP.items()}}

    def build():
        clinic = _items_of(clinic_root)
        colon = _items_of(colon_root)
        cn = {_frame_number(n, clinic_root): n for n in clinic}
        kn = {_frame_number(n, colon_root): n for n in colon}
        frames = polyp_protocol_names(list(cn), list(kn), d.seed, cfg.seed, styles)
        splits = {}
        for key, fr in frames.items():
            if key == "style":
                continue
            src, names = (clinic, cn) if key.startswith("source") else (colon, kn)
            splits[key] = [src[names[f]] for f in fr]
        style_files = [colon[kn[f]][1] for f in frames["style"]]
        sources = {"source": {"folder": str(clinic_root), "dataset": "CVC-ClinicDB"},
                   "target": {"folder": str(colon_root), "dataset": "CVC-ColonDB"},
                   "style_frames": frames["style"]}
        return splits, sources, style_files

    return params, build


# --------------------------------------------------------------------------- skin: the HAM10000 background rule
def background_lab(image: np.ndarray, mask: np.ndarray, min_L: float = PAPER_SKIN["min_L"]) -> Tuple[float, float]:
    """Mean CIELAB ``(L*, a*)`` of an RGB uint8 image outside its lesion mask (docs/method.md
    section 7), ignoring very dark pixels (``L* < min_L``: the dermatoscope's black corners)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(image)
    keep = ~mask & (lab[..., 0] >= min_L)
    if keep.sum() < 16:
        keep = ~mask
    if keep.sum() == 0:
        keep = np.ones_like(mask)
    return float(lab[..., 0][keep].mean()), float(lab[..., 1][keep].mean())


def skin_background_stats(items: Sequence[Item], thumb: int = PAPER_SKIN["thumb"], progress: bool = True,
                          cache: Optional[Path] = None) -> Dict[str, Tuple[float, float]]:
    """``{name: (L*, a*)}`` of the background of each item (images reduced to ``thumb`` px);
    cached in ``cache`` (JSON) when given."""
    from PIL import Image
    from tqdm.auto import tqdm

    stats: Dict[str, Tuple[float, float]] = {}
    if cache is not None and cache.is_file():
        stats = {k: tuple(v) for k, v in read_json(cache).items()}
    todo = [it for it in items if it[0] not in stats]
    for name, ip, mp in tqdm(todo, desc="skin background L*, a*", disable=not progress or len(todo) < 50):
        img = read_image(ip)
        mask = read_mask(mp) if mp is not None else np.zeros(img.shape[:2], bool)
        if mask.shape != img.shape[:2]:
            raise StylsegError(f"{mp}: mask size {mask.shape[::-1]} differs from its image {ip.name} "
                               f"{img.shape[1::-1]}; re-export the mask at the image's size")
        h, w = img.shape[:2]
        sc = min(1.0, thumb / max(h, w))
        if sc < 1.0:
            sz = (max(1, int(round(w * sc))), max(1, int(round(h * sc))))
            img = np.asarray(Image.fromarray(img).resize(sz, Image.BILINEAR))
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(sz, Image.NEAREST)) >= 128
        stats[name] = background_lab(img, mask)
    if cache is not None and todo:
        write_json(cache, {k: list(v) for k, v in stats.items()})
    return stats


def skin_protocol_names(stats: Dict[str, Tuple[float, float]], seed: int, style_seed: int, styles: int = 1,
                        groups: Optional[Dict[str, str]] = None, p: Optional[dict] = None) -> Dict[str, List[str]]:
    """Split HAM10000-like images by their background (docs/method.md section 7).

    ``stats``: ``{name: (L*, a*)}`` of each image's background. Target ("pink or red"): the
    ``n_test + styles + n_target_train`` images of highest a*; the ``n_test + styles`` reddest
    are shuffled with ``style_seed`` into the style image(s) and the test set, the rest are
    the oracle's target train. Source ("white"): among the remaining images whose a* is at
    most the median, the ``n_source`` of highest L*. ``groups`` (image -> lesion id, from
    HAM10000's metadata) keeps images of one lesion out of both domains at once.
    """
    p = dict(PAPER_SKIN, **(p or {}))
    names = sorted(stats, key=natural_key)
    n_tgt = p["n_test"] + styles + p["n_target_train"]
    if len(names) < n_tgt + p["n_source"]:
        raise StylsegError(f"the skin protocol needs at least {n_tgt + p['n_source']} images "
                           f"({p['n_source']} source, {p['n_test']} test, {styles} style, {p['n_target_train']} "
                           f"target train), found {len(names)}")
    by_a = sorted(names, key=lambda n: (-stats[n][1], natural_key(n)))
    target = by_a[:n_tgt]
    head = target[:p["n_test"] + styles]
    perm = np.random.default_rng([style_seed & 0xFFFFFFFF, 10015]).permutation(len(head))
    head = [head[i] for i in perm]
    style, test = head[:styles], sorted(head[styles:], key=natural_key)
    tgt_train = sorted(target[p["n_test"] + styles:], key=natural_key)
    taken = set(target)
    bad_groups = {groups[n] for n in target if groups and n in groups}
    med_a = float(np.median([stats[n][1] for n in names]))
    pool = [n for n in names if n not in taken and stats[n][1] <= med_a
            and not (groups and groups.get(n) in bad_groups)]
    pool.sort(key=lambda n: (-stats[n][0], natural_key(n)))
    if len(pool) < p["n_source"]:
        raise StylsegError(f"only {len(pool)} low-a* images left for the source domain, {p['n_source']} needed")
    source = sorted(pool[:p["n_source"]], key=natural_key)
    return {"source/train": source, "target/test": test, "target/train": tgt_train, "style": style}


def _find_skin_root(data_dir: str) -> Path:
    from .layouts import LAYOUTS

    if not data_dir:
        from ..utils import data_dir as default_data_dir

        data_dir = str(default_data_dir())
    base = Path(data_dir).expanduser()
    lay = LAYOUTS.get("ham10000")
    for cand in (base / "skin" / "HAM10000", base / "HAM10000", base / "skin", base):
        if cand.is_dir() and lay.matches(cand):
            return cand
    raise StylsegError(
        f"{base}: HAM10000 not found; the paper-skin protocol needs a folder holding (skin/HAM10000/ or directly) "
        f"HAM10000_images_part_1/, HAM10000_images_part_2/ and HAM10000_segmentations_lesion_tschandl/; "
        f"see `stylseg data list` and `stylseg data fetch ham10000`")


def _ham_groups(root: Path) -> Dict[str, str]:
    import csv

    for f in (root / "HAM10000_metadata.csv", root / "HAM10000_metadata"):
        if f.is_file():
            with open(f, newline="") as fh:
                return {r["image_id"]: r["lesion_id"] for r in csv.DictReader(fh) if "image_id" in r}
    return {}


def _plan_paper_skin(layout, cfg, data_dir: str, styles: int, progress: bool):
    from .layouts import named_pairs

    root = _find_skin_root(data_dir)
    d = cfg.data
    params = {"protocol": "paper-skin", "kind": "skin", "root": str(root.resolve()), "seg_size": d.seg_size,
              "data_seed": d.seed, "style_seed": cfg.seed, "styles": styles, "protocol_params": dict(PAPER_SKIN)}

    def build():
        items = {n: (n, i, m) for n, i, m in named_pairs("ham10000", root)}
        stats = skin_background_stats(list(items.values()), progress=progress,
                                      cache=layout.data / "skin_background.json")
        groups = _ham_groups(root)
        names = skin_protocol_names(stats, d.seed, cfg.seed, styles, groups=groups)
        splits = {k: [items[n] for n in v] for k, v in names.items() if k != "style"}
        style_files = [items[n][1] for n in names["style"]]
        sources = {"source": {"folder": str(root), "dataset": "HAM10000", "rule": "white background (high L*, low a*)"},
                   "target": {"folder": str(root), "dataset": "HAM10000", "rule": "pink/red background (high a*)"},
                   "style_images": names["style"], "lesion_groups": bool(groups)}
        return splits, sources, style_files

    return params, build


# --------------------------------------------------------------------------- main entry
def _style_paths(layout, styles: int) -> List[Path]:
    return [layout.style_image] + [layout.style_file(k) for k in range(styles)]


def plan_run_data(layout, cfg, kind: str = "", data_dir: str = "", protocol: str = "", source: str = "",
                  target: str = "", style: str = "", styles: int = 1, progress: bool = True):
    """The checks of :func:`prepare_run_data` that need no image read: the kind, the protocol and its data
    root, the source/target folders (which must exist) and the style file. Returns ``(params, build)``;
    raises :class:`StylsegError` naming what is wrong. ``stylseg reproduce`` calls it before notebook 00."""
    kind = kind or cfg.data.kind
    from .synth import SYNTH_DOMAINS

    SYNTH_DOMAINS.get(kind)
    styles = int(styles)
    if styles < 1:
        raise StylsegError(f"styles must be at least 1, got {styles}")
    for what, p in (("the source folder", source), ("the target folder", target), ("the style image", style)):
        if p and not Path(p).expanduser().exists():
            kind_ = "style image" if "style" in what else "folder"
            raise StylsegError(f"{Path(p).expanduser().resolve()}: {kind_} not found ({what}; a relative path is read "
                               f"from the folder the command runs in, {Path.cwd()})")
    if protocol:
        if protocol == "paper-polyp":
            if kind != "polyp":
                raise StylsegError(f"protocol paper-polyp is for kind polyp, not {kind!r}")
            params, build = _plan_paper_polyp(layout, cfg, data_dir, styles)
        elif protocol == "paper-skin":
            if kind != "skin":
                raise StylsegError(f"protocol paper-skin is for kind skin, not {kind!r}; set KIND/--kind skin")
            params, build = _plan_paper_skin(layout, cfg, data_dir, styles, progress)
        else:
            raise StylsegError(f"unknown protocol {protocol!r}; valid protocols: paper-polyp, paper-skin "
                               f"(or none for synthetic data / given folders)")
    elif source or target:
        params, build = _plan_folders(layout, cfg, kind, source, target, style, styles)
    else:
        params, build = _plan_synthetic(layout, cfg, kind, styles, progress)
    pool = _style_pool(params)
    if pool is not None and styles > pool:
        raise StylsegError(f"styles={styles} (--styles) but the target domain holds only {pool} training image(s) to "
                           f"draw style images from (and the --style given, if any); ask for at most {pool} "
                           f"(--styles {pool})")
    return params, build


def _style_pool(params: Dict[str, object]) -> Optional[int]:
    """How many images the style images can be drawn from, counted from file names (no image is read): the target
    domain's training split plus the given style file or folder; None where the protocol picks them itself."""
    def n_split(n: int) -> int:
        return n - min(n - 1, max(1, int(round(n * float(params["test_fraction"]))))) if n >= 2 else n

    if params["protocol"] == "synthetic":
        return n_split(int(params["n_per_domain"]))
    if params["protocol"] != "folders":
        return None
    tgt = Path(str(params["target"]))
    if _has_splits(tgt):
        sub = tgt / "train" if (tgt / "train" / "images").is_dir() else tgt / "test"
        n = len(list_images(sub / "images")) if (sub / "images").is_dir() else 0
    elif (tgt / "images").is_dir():
        n = n_split(len(list_images(tgt / "images")))
    else:
        return None  # a public layout that detect_pairs reads: counted when the data is prepared
    sty = Path(str(params.get("style") or ""))
    if str(params.get("style") or ""):
        n += 1 if sty.is_file() else len(list_images(sty / "images" if (sty / "images").is_dir() else sty))
    return n


def prepare_run_data(layout, cfg, kind: str = "", data_dir: str = "", protocol: str = "", source: str = "",
                     target: str = "", style: str = "", styles: int = 1, progress: bool = True) -> Dict[str, object]:
    """Materialise the data part of a run folder and write ``RUN/data/split.json``.

    ``layout``: a :class:`~stylseg.layout.RunLayout`; ``cfg``: the run's
    :class:`~stylseg.config.RunConfig` (``cfg.data`` sizes, counts and seed; ``cfg.seed``
    picks the style image). ``kind``: ``polyp`` | ``skin`` (``""`` = ``cfg.data.kind``).

    * default: synthetic source and target domains (``cfg.data.source_domain`` /
      ``target_domain``, ``""`` = the kind's defaults), ``cfg.data.n_per_domain`` scenes each
      drawn at ``cfg.data.synth_size``, split by ``cfg.data.test_fraction``;
    * ``source``/``target`` paired folders (with ``train/``/``test/`` subfolders, or split
      by ``test_fraction``) and optionally a ``style`` image file or folder;
    * ``protocol="paper-polyp"`` / ``"paper-skin"`` with ``data_dir`` holding the real data.

    Writes ``RUN/data/{source,target}/{train,test}/images|masks`` (+ ``target/test_all`` for
    paper-polyp) at ``cfg.data.seg_size``, ``RUN/data/style.png`` (one target-domain training
    image unless given) and ``RUN/data/styles/style_K.png`` for ``K < styles``
    (``style_0`` = ``style.png``). Returns ``{"source_train", "source_test", "target_train",
    "target_test", ["target_test_all"], "style", "styles", "split", "root"}`` paths.
    """
    from ..lock import stage_lock

    kind = kind or cfg.data.kind
    params, build = plan_run_data(layout, cfg, kind=kind, data_dir=data_dir, protocol=protocol, source=source,
                                  target=target, style=style, styles=styles, progress=progress)
    params["split_version"] = SPLIT_VERSION
    params = json.loads(json.dumps(params))  # as it reads back from split.json (tuples -> lists)
    with stage_lock(layout.data, "data prepare"):  # one writer; split.json is read only while it is held
        inputs = _input_fingerprints(params)
        old = _check_prepared(layout, params, inputs)
        if old is not None and _all_present(layout, old):
            return _result(layout, old)
        splits, sources, style_src = build()
        size = cfg.data.seg_size
        written: dict = {}
        for key, items in splits.items():
            which, sp = key.split("/")
            _write_items(items, layout.domain(which, sp), size, progress=progress, desc=key, written=written)
        style_names = _write_styles(layout, cfg, splits, style_src, styles, size)
        doc = {"protocol": params["protocol"], "params": params, "seed": cfg.data.seed, "style_seed": cfg.seed,
               "size": size, "kind": kind,
               "splits": {k: [it[0] for it in v] for k, v in splits.items()},
               "sizes": {k: len(v) for k, v in splits.items()},
               "style": style_names, "sources": sources, "inputs": inputs}
        write_json(layout.split_json, doc)
    return _result(layout, doc)


def _input_fingerprints(params: Dict[str, object]) -> Dict[str, object]:
    """``{"source"|"target"|"style": {"files", "sha256"}}``: the content of the user's input folders and style
    file (every file under them, hidden ones excluded), so that a rerun notices changed input. Synthetic data is
    made from its parameters and the paper protocols read checksummed downloads: they record nothing."""
    from ..checkpoint import files_fingerprint

    out: Dict[str, object] = {}
    for key in ("source", "target", "style"):
        p = Path(str(params.get(key) or "")) if params.get("protocol") == "folders" else None
        if p is None or not str(params.get(key) or ""):
            continue
        if p.is_file():
            out[key] = files_fingerprint([p])
        else:
            out[key] = files_fingerprint([q for q in p.rglob("*") if q.is_file() and not any(
                part.startswith(".") for part in q.relative_to(p).parts)], p)
    return out


def _check_prepared(layout, params: Dict[str, object], inputs: Dict[str, object]) -> Optional[Dict[str, object]]:
    """The run's ``split.json`` when it was prepared with ``params`` from input of the same content (None when there
    is none); else a :class:`StylsegError` naming what differs and how to start over."""
    split_path = layout.split_json
    if not split_path.is_file():
        return None
    old = read_json(split_path)
    old_version = old.get("params", {}).get("split_version", 1)
    if old_version != SPLIT_VERSION:
        raise StylsegError(
            f"{split_path}: this run's data was prepared by another version of the kit (split version "
            f"{old_version}; this kit writes version {SPLIT_VERSION}, in which the paper-polyp test set is the "
            f"paper's 20 CVC-ColonDB frames). Prepare the run again: use a new RUN_DIR / --out, or delete "
            f"{layout.root} (everything in it was made from the old data)")
    if old.get("params") != params:
        diff = sorted(k for k in set(params) | set(old.get("params", {}))
                      if params.get(k) != old.get("params", {}).get(k))
        raise StylsegError(f"{split_path}: the run's data was prepared with other parameters (differ: "
                           f"{', '.join(diff)}); use another RUN_DIR / --out, or delete {layout.data} to "
                           f"prepare it again")
    _refuse_changed(layout, params, old.get("inputs", {}), inputs)
    return old


def _refuse_changed(layout, params, recorded: Dict[str, object], inputs: Dict[str, object]) -> None:
    changed = [k for k in inputs if recorded.get(k) != inputs[k]]
    if changed:
        what = "; ".join(f"the {k} {params[k]} ({_fp(recorded.get(k))} -> {_fp(inputs[k])})" for k in changed)
        raise StylsegError(f"{layout.split_json}: the content of the input changed since the run's data was prepared: "
                           f"{what}. Its copies under {layout.data}, and everything made from them, are of the old "
                           f"input. Start over: prepare into a new folder (--out NEW_DIR / RUN_DIR), or delete "
                           f"{layout.root} and run again")


def check_inputs_unchanged(layout, params: Dict[str, object]) -> None:
    """Raise :class:`StylsegError` when the run's ``split.json`` recorded input content (source, target, style of
    :func:`plan_run_data`'s ``params``) that differs now: ``stylseg reproduce`` checks it before notebook 00, which
    it skips when its parameters are unchanged."""
    if not layout.split_json.is_file():
        return
    old = read_json(layout.split_json)
    recorded = old.get("inputs") if isinstance(old, dict) else None
    if isinstance(recorded, dict) and recorded:
        inputs = {k: v for k, v in _input_fingerprints(params).items() if k in recorded}
        _refuse_changed(layout, params, recorded, inputs)


def _fp(fp) -> str:
    if not isinstance(fp, dict):
        return "not recorded"
    return f"{fp['files']} file{'' if fp['files'] == 1 else 's'}, sha256 {fp['sha256'][:12]}"


def _write_styles(layout, cfg, splits, style_src, styles: int, size: int) -> Dict[str, str]:
    """Write style.png and styles/style_K.png; returns {file: where it came from}."""
    chosen: List[Tuple[str, Path]] = []
    if isinstance(style_src, (list, tuple)):  # protocol: given files
        chosen = [(str(p), Path(p)) for p in style_src]
    elif isinstance(style_src, str) and style_src:  # a file or a folder given by the user
        sp = Path(style_src)
        if sp.is_dir():
            from .dataset import load_pairs

            files = [p for p, _ in load_pairs(sp, require_masks=False)]
            pick = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 5]).choice(len(files), size=min(styles, len(files)),
                                                                          replace=False)
            chosen = [(str(files[int(i)]), files[int(i)]) for i in pick]
        elif sp.is_file():
            chosen = [(str(sp), sp)]
        else:
            raise StylsegError(f"{sp}: style image not found; pass an image file (or a folder of target-domain "
                               f"images) as STYLE / --style")
    if len(chosen) < styles:
        pool_key = "target/train" if splits.get("target/train") else "target/test"
        pool = [it for it in splits[pool_key] if str(it[1]) not in {c[0] for c in chosen}]
        if len(pool) < styles - len(chosen):
            raise StylsegError(f"styles={styles} but {pool_key} holds only {len(pool)} images to draw them from")
        pick = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 3]).choice(len(pool), size=styles - len(chosen),
                                                                      replace=False)
        chosen += [(f"{pool_key}/{pool[int(i)][0]}", pool[int(i)][1]) for i in pick]
    out = {}
    paths = _style_paths(layout, styles)
    for k, path in enumerate(paths):
        origin, src = chosen[max(0, k - 1)]
        if not path.is_file():
            write_image(path, resize_image(read_image(src), size))
        out[str(path.relative_to(layout.data))] = origin
    return out


def _all_present(layout, doc) -> bool:
    for key, names in doc.get("splits", {}).items():
        which, sp = key.split("/")
        if not _complete(layout.domain(which, sp), names):
            return False
    return all((layout.data / f).is_file() for f in doc.get("style", {}))


def _result(layout, doc) -> Dict[str, object]:
    out: Dict[str, object] = {"root": layout.data, "split": layout.split_json, "style": layout.style_image,
                              "styles": [layout.style_file(k) for k in range(doc["params"].get("styles", 1))]}
    for key in doc.get("splits", {}):
        which, sp = key.split("/")
        out[f"{which}_{sp}"] = layout.domain(which, sp)
    return out
