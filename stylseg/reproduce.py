"""``stylseg reproduce``: run the numbered notebooks in order with papermill into a run folder.

Each notebook ``notebooks/NN_name.ipynb`` is executed with the parameters it declares (of
PROFILE, SEED, DEVICE, DATA_DIR, RUN_DIR, KIND, SOURCE_DIR, TARGET_DIR, STYLE, PROTOCOL,
STYLES, ARCHS, SEEDS), written executed to ``RUN/notebooks/NN_name.ipynb``, and marked done in
``RUN/notebooks/NN_name.done.json`` with its parameters. A rerun skips notebooks already done
with the same parameters, so an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .layout import RunLayout, check_run_format, save_run_config
from .utils import StylsegError, project_root, read_json, write_json

#: notebooks ``stylseg reproduce`` runs: 00-07, the pipeline, and 08, the playground, which reads the finished run
#: (without a browser it renders its default setting once, so that its HTML is in the report)
PIPELINE_MAX = 8


def notebooks_dir() -> Path:
    env = os.environ.get("STYLSEG_NOTEBOOKS")
    if env:
        return Path(env)
    return project_root() / "notebooks"


def pipeline_notebooks(folder: Optional[Path] = None, upto: int = PIPELINE_MAX) -> List[Path]:
    folder = Path(folder or notebooks_dir())
    if not folder.is_dir():
        raise StylsegError(f"{folder}: notebooks folder not found; run from a checkout of the stylseg repository "
                           f"or set STYLSEG_NOTEBOOKS")
    nbs = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if int(p.name[:2]) <= upto)
    if not nbs:
        raise StylsegError(f"{folder}: no numbered notebooks (NN_name.ipynb) found")
    return nbs


def declared_parameters(nb_path: Path) -> Dict[str, Any]:
    """Names and defaults in the notebook's ``parameters`` cell."""
    import papermill as pm

    return {k: v.get("default") for k, v in pm.inspect_notebook(str(nb_path)).items()}


def _digest(params: Dict[str, Any], nb_path: Path) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(nb_path.read_bytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def kernel_environment():
    """The environment a notebook kernel starts with: the caller's, less ``MPLBACKEND``.

    A kernel started with ``MPLBACKEND=Agg`` (set by test runners and headless scripts) keeps that backend
    instead of Jupyter's inline one, and every ``plt.show()`` then draws nothing into the executed notebook."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def kernel_manager_class():
    """The kernel manager the notebooks run under: on Linux and macOS one that talks to its kernel over local
    sockets (IPC) instead of TCP on localhost, so that no other user of the machine can reach the kernel's ports
    (and the kernel prints no "running over TCP without encryption" warning); elsewhere Jupyter's default."""
    from jupyter_client.manager import KernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    # the sockets live beside the connection file (<runtime dir>/kernel-<uuid>-ipc-<n>); a socket's path must stay
    # under the 104 bytes macOS allows, so a long runtime folder keeps TCP
    if os.name != "posix" or len(os.fsencode(jupyter_runtime_dir())) > 50:
        return KernelManager

    class LocalSocketKernelManager(KernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"

    return LocalSocketKernelManager


#: where the rendered notebooks find MathJax: a folder beside them, copied from the ``jupyter-server-mathjax``
#: package (MathJax 2.7, the version nbconvert's templates are written for), so that the pages typeset their
#: equations without a network and the run folder can be moved as a whole
MATHJAX_DIR = "mathjax"
#: the package ships the STIX-Web fonts only (not MathJax's default TeX fonts): a local configuration file selects them,
#: as the classic Jupyter Notebook did
MATHJAX_FONTS = "local/stix"
MATHJAX_CONFIG = f"TeX-AMS-MML_HTMLorMML-full,Safe,{MATHJAX_FONTS}"
_FONTS_JS = """MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, imageFont: null,
  font: "STIX-Web", webFont: "STIX-Web"}, SVG: {font: "STIX-Web"}});
MathJax.Ajax.loadComplete("[MathJax]/config/%s.js");
""" % MATHJAX_FONTS


def local_mathjax(folder: Path, log=print) -> Optional[str]:
    """Copy MathJax into ``folder/mathjax`` (once; through a temporary folder, then renamed) and return the URL
    relative to ``folder`` that nbconvert's ``HTMLExporter.mathjax_url`` takes; None (with a note) when the
    ``jupyter-server-mathjax`` package is missing."""
    import shutil

    try:
        import jupyter_server_mathjax
    except ImportError:
        log("[note] the package jupyter-server-mathjax is not installed: the notebooks' HTML loads MathJax from the "
            "web and shows raw LaTeX offline (pip install jupyter-server-mathjax)")
        return None
    dest = Path(folder) / MATHJAX_DIR
    fonts = Path("config") / f"{MATHJAX_FONTS}.js"
    if not ((dest / "MathJax.js").is_file() and (dest / fonts).is_file()):
        src = Path(jupyter_server_mathjax.__file__).parent / "static"
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        (tmp / fonts).parent.mkdir(parents=True, exist_ok=True)
        (tmp / fonts).write_text(_FONTS_JS, encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    return f"{MATHJAX_DIR}/MathJax.js?config={MATHJAX_CONFIG}"


def render_html(executed: Path, log=print) -> Optional[Path]:
    """Render an executed notebook to ``<name>.html`` beside it (nbconvert, figures embedded), so that it opens in
    a browser without Jupyter, its equations typeset by the MathJax copied beside it (:func:`local_mathjax`).
    Returns the page, or None (with a note) when nbconvert cannot render it."""
    from nbconvert import HTMLExporter

    from .utils import atomic_path

    executed = Path(executed)
    if not executed.is_file():
        return None
    try:
        url = local_mathjax(executed.parent, log=log)
        exporter = HTMLExporter(mathjax_url=url) if url else HTMLExporter()
        body, _ = exporter.from_filename(str(executed))
    except Exception as e:  # a rendering problem must not fail a finished reproduction
        log(f"[note] {executed.name} could not be rendered to HTML ({type(e).__name__}: {e}); the .ipynb is there")
        return None
    out = executed.with_suffix(".html")
    with atomic_path(out) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return out


def run_notebooks(run_dir: os.PathLike, params: Dict[str, Any], notebooks: Optional[Sequence[Path]] = None,
                  force: bool = False, log=print, kernel_name: Optional[str] = None,
                  config_overrides: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """Execute ``notebooks`` (default: the pipeline) in order; returns one record per notebook
    with its name, status (ran | skipped) and seconds. Stops at the first failing notebook,
    naming it and the executed copy that shows the error. ``config_overrides`` (``--set``) were
    written into ``RUN/config.json`` by the caller; they count as parameters for the skip check."""
    import papermill as pm

    layout = RunLayout(Path(run_dir).resolve())
    out_dir = layout.notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(params, RUN_DIR=str(layout.root))
    records = []
    for nb in notebooks or pipeline_notebooks():
        declared = declared_parameters(nb)
        mine = {k: v for k, v in params.items() if k in declared}
        done_path = out_dir / (nb.stem + ".done.json")
        digest = _digest(dict(mine, **({"--set": dict(sorted(config_overrides.items()))} if config_overrides else {})),
                         nb)
        if not force and done_path.is_file() and read_json(done_path).get("digest") == digest:
            log(f"[skip] {nb.name} (done with the same parameters)")
            records.append({"notebook": nb.name, "status": "skipped", "seconds": 0.0})
            continue
        if done_path.exists():
            done_path.unlink()
        log(f"[run ] {nb.name} {json.dumps(mine, default=str)}")
        t = time.time()
        out_nb = out_dir / nb.name
        try:
            with kernel_environment():
                pm.execute_notebook(str(nb), str(out_nb), parameters=mine, cwd=str(nb.parent), progress_bar=False,
                                    kernel_name=kernel_name, log_output=False,
                                    kernel_manager_class=kernel_manager_class())
        except pm.PapermillExecutionError as e:
            html = render_html(out_nb, log=log)
            raise StylsegError(f"notebook {nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                               f"  the executed copy with the error: {html or out_nb}") from None
        render_html(out_nb, log=log)
        secs = time.time() - t
        write_json(done_path, {"digest": digest, "parameters": mine, "seconds": secs,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log(f"[done] {nb.name} in {secs:.1f} s")
        records.append({"notebook": nb.name, "status": "ran", "seconds": secs})
    write_json(out_dir / "timings.json", records)
    return records


def register(p: argparse.ArgumentParser) -> None:
    from .cli import add_common

    p.add_argument("--out", required=True, help="run folder (created; rerun the same command to resume)")
    p.add_argument("--kind", default="", help="polyp | skin (default: data.kind of the profile or --set)")
    p.add_argument("--data", default="", help="real data root (with --protocol)")
    p.add_argument("--protocol", default="", help="paper-polyp | paper-skin: the real-data split of docs/method.md")
    p.add_argument("--source", default="", help="source-domain paired folder (images/, masks/)")
    p.add_argument("--target", default="", help="target-domain paired folder (test set)")
    p.add_argument("--style", default="", help="the one target-domain style image")
    p.add_argument("--styles", type=int, default=1,
                   help="one-shot spread: draw K style images from the target domain (style_0 = style.png) and "
                        "make the stylized and baseline arms once per style image (<arm>@s<k>); the results "
                        "show the spread over style images (default 1)")
    p.add_argument("--presets", default="",
                   help="compare stylizer presets in one run, e.g. osasis,paper,gates: one stylizer per preset on "
                        "the shared D_A, its arms named <arm>@<preset> (st@gates, source+st@osasis); the baselines "
                        "are made once (the same as --set eval.presets=...)")
    p.add_argument("--archs", default="", help="comma-separated architectures (default: the profile's)")
    p.add_argument("--seeds", type=int, default=0, help="seeds 0..K-1 for segmentation (default: the profile's)")
    p.add_argument("--upto", type=int, default=PIPELINE_MAX, help="run notebooks 00..NN only")
    p.add_argument("--force", action="store_true", help="rerun notebooks even if done")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help="override a config field for the whole run (written to RUN/config.json, which every "
                        "notebook reads), e.g. --set seg.epochs=5; repeat the same --set to resume")
    add_common(p, profile=False)
    p.add_argument("--profile", default="smoke", help="smoke | workshop | cpu | paper (make reproduce: workshop)")
    p.set_defaults(func=_cmd)


def _abs(p: str) -> str:
    """A path given on the command line, absolute against the caller's working directory ("" stays "")."""
    return str(Path(p).expanduser().resolve()) if p else ""


def required_weights(cfg, archs: Optional[List[str]] = None) -> List[Dict[str, str]]:
    """The pretrained files a run with ``cfg`` asks for, each ``{"name", "for", "optout"}``: the segmenters' ImageNet
    encoders (``seg.pretrained``; ``archs`` default ``cfg.seg.archs``), CLIP (``stylize.embedder=clip`` with
    weights named by ``stylize.clip_pretrained``), LPIPS's VGG16 (``stylize.recon_perceptual=lpips``) and the published DiffAE (``diffae.init`` a registry name)."""
    from .diffusion.pretrained import train_cost
    from .seg.models import pretrained_weights
    from .stylize.embedders import clip_weights_name
    from .weights import WEIGHTS

    out: List[Dict[str, str]] = []
    for arch in archs or cfg.seg.archs:
        name = pretrained_weights(arch, cfg.seg)
        if name and name not in {r["name"] for r in out}:
            out.append({"name": name, "for": f"the {arch} encoder", "optout": "--set seg.pretrained=false"})
    sc = cfg.stylize
    if sc.embedder == "clip" and sc.clip_pretrained not in ("", "none"):
        name = clip_weights_name(sc.clip_model, sc.clip_pretrained)
        if name in WEIGHTS:
            out.append({"name": name, "for": "the CLIP style loss",
                        "optout": "--set stylize.embedder=weightfree (the kit's weight-free style embedder)"})
    if sc.loss_set == "osasis" and sc.recon_perceptual == "lpips":
        out.append({"name": "vgg16-imagenet", "for": "OSASIS's LPIPS term (its VGG16 trunk)",
                    "optout": "--set stylize.recon_perceptual=msssim (the stand-in 1 - MS-SSIM)"})
    if cfg.diffae.init in WEIGHTS:
        out.append({"name": cfg.diffae.init, "for": "D_A, the published DiffAE",
                    "optout": f"--set diffae.init=train, training the kit's own DiffAE ({train_cost(cfg)})"})
    return out


def check_required_weights(cfg, archs: Optional[List[str]] = None) -> None:
    """Stop before any work when a pretrained file the run asks for is missing: one :class:`StylsegError` listing
    each file, how to get it and the explicit opt-out (which the run then records in its config)."""
    from .weights import WEIGHTS, path

    missing = [r for r in required_weights(cfg, archs) if not path(r["name"]).is_file()]
    if not missing:
        return
    lines = []
    for r in missing:
        e = WEIGHTS.get(r["name"])
        how = (f"download {e.filename} by hand from {e.page} and put it at {path(r['name'])}" if e.manual
               else f"`stylseg weights fetch {r['name']}` (or put the file at {path(r['name'])})")
        lines.append(f"  - {r['name']} for {r['for']}: {how}; or {r['optout']}")
    raise StylsegError("pretrained weights this run asks for are missing (nothing was started):\n" + "\n".join(lines))


def preflight(args: argparse.Namespace) -> None:
    """Check every name and path of a ``stylseg reproduce`` call before notebook 00 runs, so that a typo
    costs seconds, not the notebooks before the one that reads it: the profile, every ``--set``, the kind,
    the protocol and its data, the source/target folders and style image, the architectures, the arms
    (``eval.arms``), and the counts. Paths are made absolute against the working directory (the notebooks
    run in ``notebooks/``). Raises :class:`StylsegError`."""
    from .config import RunConfig, get_profile, parse_set_args
    from .data.split import check_inputs_unchanged, plan_run_data
    from .layout import arm_base, check_name
    from .seg.models import SEGMENTERS

    cfg = get_profile(args.profile)  # validates the name
    layout = RunLayout(_abs(args.out))
    if layout.config.is_file():
        saved = RunConfig.load(layout.config)
        if saved.profile == args.profile:
            cfg = saved
    sets = parse_set_args(args.set)
    cfg = cfg.override(**sets)  # unknown fields, bad types and out-of-range values
    if args.kind:
        from .config import CHOICES
        from .utils import check_choice

        check_choice(args.kind, CHOICES["data.kind"], "kind (--kind)")
        if "data.kind" in sets and sets["data.kind"] != args.kind:
            raise StylsegError(f"--kind {args.kind} contradicts --set data.kind={sets['data.kind']}: give the kind "
                               f"once (either flag)")
        cfg = cfg.override(**{"data.kind": args.kind})
    args.kind = cfg.data.kind  # what the notebooks get as KIND: the one kind of the run
    for name in ("data", "source", "target", "style"):
        setattr(args, name, _abs(getattr(args, name)))
    if args.protocol and not args.data:
        from .utils import data_dir

        args.data = str(data_dir())
    if args.data and not args.protocol:
        raise StylsegError(f"--data {args.data} is read only with --protocol paper-polyp | paper-skin; for your own "
                           f"folders pass --source and --target")
    params, _ = plan_run_data(layout, cfg, kind=args.kind, data_dir=args.data, protocol=args.protocol,
                              source=args.source, target=args.target, style=args.style, styles=args.styles,
                              progress=False)
    check_inputs_unchanged(layout, params)  # notebook 00 is skipped when its parameters are unchanged
    archs = [a.strip() for a in args.archs.split(",") if a.strip()] if args.archs else list(cfg.seg.archs)
    for a in archs:
        SEGMENTERS.get(a)  # an unknown name lists the valid ones
    # every pretrained file the run asks for, before any work (a D_A the run folder already holds needs none)
    if (layout.diffae / "config.json").is_file():
        cfg = cfg.override(**{"diffae.init": "train"})
    check_required_weights(cfg, archs)
    from .stylize.perceptual import stand_in_note

    note = stand_in_note(cfg)  # LPIPS's weights absent under recon_perceptual=auto: the stand-in runs, said here
    if note:
        print(note, file=sys.stderr)
    from .stylize.baselines import RUN_BASELINES
    from .study.arms import ARM_ORDER, UNION, arm_kinds, is_union

    have = {kind for p in (layout.root / "stylized").glob("*") if p.is_dir() for kind in arm_kinds(p.name)}
    known = set(ARM_ORDER) | set(RUN_BASELINES) | have | {"st_sensor", "sensor"}
    for arm in cfg.eval.arms:
        base = arm_base(check_name(arm, "arm", "eval.arms"))
        if (base[len(UNION):] if is_union(base) else base) not in known:
            raise StylsegError(f"eval.arms names {arm!r}, which no notebook makes; valid arms: "
                               f"{', '.join(sorted(known))} (--set eval.arms=direct,st,...)")
    if args.seeds < 0:
        raise StylsegError(f"--seeds {args.seeds}: expected K >= 1 (seeds 0..K-1), or 0 for the profile's")
    if not 0 <= args.upto <= PIPELINE_MAX:
        raise StylsegError(f"--upto {args.upto}: expected a notebook number 0..{PIPELINE_MAX}")


def _cmd(args: argparse.Namespace) -> int:
    _refuse_launcher()
    if args.presets:
        args.set = list(args.set) + [f"eval.presets={args.presets}"]
    preflight(args)
    params = {"PROFILE": args.profile, "SEED": args.seed or 0, "DEVICE": args.device or "auto",
              "DATA_DIR": args.data, "KIND": args.kind, "PROTOCOL": args.protocol, "SOURCE_DIR": args.source,
              "TARGET_DIR": args.target, "STYLE": args.style, "STYLES": args.styles, "ARCHS": args.archs,
              "SEEDS": args.seeds}
    from .lock import stage_lock

    check_run_format(args.out)
    if args.upto >= 2:  # notebook 02 makes D_A: stop now, before any work, when its source is missing
        _check_diffae_source(args.out, args.profile, args.set)
    with stage_lock(args.out, "reproduce"):  # one reproduction at a time per run folder
        sets = write_run_config(args.out, args.profile, args.set)
        t = time.time()
        recs = run_notebooks(args.out, params, notebooks=pipeline_notebooks(upto=args.upto), force=args.force,
                             config_overrides=sets)
    total = time.time() - t
    print(f"reproduction finished in {total / 60:.1f} min; results in {Path(args.out).resolve()}")
    for r in recs:
        print(f"  {r['notebook']:<40} {r['status']:<8} {r['seconds']:7.1f} s")
    layout = RunLayout(args.out)
    if layout.index_html.is_file():
        from .report import write_index

        write_index(layout)  # again, now that every notebook of the run is rendered to HTML
        print(f"open {layout.index_html.resolve()}")
    return 0


def _refuse_launcher() -> None:
    """Started by ``accelerate launch`` / ``torchrun``, every process would run every notebook into the same run
    folder, and the notebook kernels would inherit WORLD_SIZE and wait for peers that never come."""
    from .launch import LAUNCHER_VARS, launched_processes

    n = launched_processes()
    if n > 1:
        key = next(k for k in LAUNCHER_VARS if os.environ.get(k, "").isdigit())
        raise StylsegError(
            f"stylseg reproduce was started as one of {n} processes ({key}={n}, set by accelerate launch, torchrun "
            "or mpirun); it runs the notebooks one after another in a single process. Run it plainly. For several "
            "GPUs, launch the heavy stages themselves: `accelerate launch -m stylseg.cli diffae train ...` and "
            "`accelerate launch -m stylseg.cli stylize finetune ...` into the run folder, then `stylseg reproduce` "
            "reuses what they wrote")


def _check_diffae_source(run_dir: os.PathLike, profile: str, sets: Sequence[str]) -> None:
    """Raise when the run's ``diffae.init`` names a D_A that is not there (the paper profile's published
    DiffAE not downloaded), unless the run folder already holds D_A."""
    from .config import RunConfig, get_profile, parse_set_args
    from .diffusion.pretrained import check_init

    layout = RunLayout(run_dir)
    if (layout.diffae / "config.json").is_file():
        return
    cfg = get_profile(profile)
    if layout.config.is_file():
        saved = RunConfig.load(layout.config)
        if saved.profile == profile:
            cfg = saved
    check_init(cfg.override(**parse_set_args(sets)))


def write_run_config(run_dir: os.PathLike, profile: str, sets: Sequence[str]) -> Dict[str, str]:
    """Apply ``--set`` items to the run's config (``RUN/config.json`` when it holds the same profile, else
    the profile's) and save it, so that every notebook of the run reads them. Returns the parsed items."""
    from .config import RunConfig, get_profile, parse_set_args

    kv = parse_set_args(sets)
    if not kv:
        return {}
    layout = RunLayout(run_dir)
    check_run_format(layout.root)
    cfg = get_profile(profile)
    if layout.config.is_file():
        saved = RunConfig.load(layout.config)
        if saved.profile == profile:
            cfg = saved
    cfg = cfg.override(**kv)  # unknown or ill-typed fields raise here, before any notebook runs or folder is made
    layout.root.mkdir(parents=True, exist_ok=True)
    save_run_config(layout.config, cfg)
    return kv


def main(argv=None) -> int:  # `python -m stylseg.reproduce --strip notebooks/*.ipynb`
    from .nbtools import strip_outputs

    ap = argparse.ArgumentParser(prog="python -m stylseg.reproduce")
    ap.add_argument("--strip", nargs="+", help="strip outputs from these notebooks in place")
    a = ap.parse_args(argv)
    for p in a.strip or []:
        if strip_outputs(p):
            print(f"stripped {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
