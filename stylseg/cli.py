"""Command line: ``stylseg STAGE ACTION ...``.

Stages load lazily, so ``stylseg data check`` does not import the diffusion code. Each
stage module defines ``register(parser)`` adding its actions (sub-parsers) and their
``func``. A :class:`~stylseg.utils.StylsegError` prints its message and exits 2; a warning prints
as ``stylseg STAGE: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import List, Optional

from .config import RunConfig, get_profile, parse_set_args
from .utils import StylsegError, __version__

STAGES = {
    "data": ("stylseg.data.cli", "datasets: synth, check, fetch, split, list"),
    "diffae": ("stylseg.diffusion.cli", "Diffusion Autoencoder: train, reconstruct, sample"),
    "stylize": ("stylseg.stylize.cli", "one-shot stylization: finetune, apply, baseline, score"),
    "seg": ("stylseg.study.cli", "segmentation: train, predict, compare"),
    "evaluate": ("stylseg.metrics", "metrics of prediction maps against masks"),
    "report": ("stylseg.report", "tables, radar charts, figures and index.html of a run"),
    "reproduce": ("stylseg.reproduce", "run the numbered notebooks end to end with papermill"),
    "weights": ("stylseg.weights", "pretrained weights: list, fetch, path"),
}


def add_common(p: argparse.ArgumentParser, profile: bool = True) -> None:
    """Flags every writing command shares: --profile, --seed, --device, --set, --config."""
    if profile:
        p.add_argument("--profile", default=None, help="smoke | workshop | cpu | paper (default: smoke, or the --config's)")
        p.add_argument("--config", default=None, help="a run's config.json to start from")
        p.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                       help="override any config field, e.g. --set seg.epochs=5 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")


def config_from_args(args: argparse.Namespace, extra: Optional[dict] = None) -> RunConfig:
    """Build the run config: --config or the profile, then --set, then explicit flags (``extra``)."""
    if getattr(args, "config", None):
        cfg = RunConfig.load(args.config)
        if getattr(args, "profile", None) and args.profile != cfg.profile:
            raise StylsegError(f"--profile {args.profile} contradicts {args.config} (profile {cfg.profile}); drop one")
    else:
        cfg = get_profile(getattr(args, "profile", None) or "smoke")
    cfg = cfg.override(**parse_set_args(getattr(args, "set", [])))
    top = {"seed": getattr(args, "seed", None), "device": getattr(args, "device", None)}
    cfg = cfg.override(**top)
    if extra:
        cfg = cfg.override(**extra)
    return cfg


def build_parser(stage: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylseg",
        description="Structure-aware stylized image synthesis for robust medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"stylseg {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, (mod, help_) in STAGES.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if name == stage:
            importlib.import_module(mod).register(sp)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = argv[0] if argv and argv[0] in STAGES else None
    parser = build_parser(stage)
    args = parser.parse_args(argv)
    if not getattr(args, "stage", None):
        parser.print_help()
        return 0
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([args.stage, "--help"])
        return 0
    def show_warning(message, category, filename, lineno, file=None, line=None):
        # a warning for the user reads like an error, without the source line of the library
        print(f"stylseg {args.stage}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            rc = func(args)
    except StylsegError as e:
        print(f"stylseg {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
