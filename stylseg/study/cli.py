"""``stylseg seg compare``: Algorithm 2 on folders given on the command line (the study's command, registered
beside ``seg train`` and ``seg predict``, which the segmentation library owns)."""

from __future__ import annotations

from pathlib import Path

from ..utils import StylsegError


def register(parser) -> None:
    from ..cli import add_common
    from ..seg.cli import register as register_seg

    sub = register_seg(parser)
    p = sub.add_parser("compare", help="Algorithm 2: direct vs arms (vs oracle), predict, evaluate, tabulate")
    p.add_argument("--train", required=True, help="original training set (the direct arm)")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=DIR", help="a training arm (repeatable)")
    p.add_argument("--test", action="append", default=[], metavar="NAME=DIR", help="a test set (repeatable)")
    p.add_argument("--archs", default=None, help="comma-separated (default: the profile's seg.archs)")
    p.add_argument("--seeds", type=int, default=None, help="K: seeds 0..K-1 (default: the profile's seg.seeds)")
    p.add_argument("--oracle", default=None, help="labelled target-domain training set (the oracle arm)")
    p.add_argument("--out", required=True, help="output folder (<arch>/<arm>/seed<k>/, results.json, results.md)")
    add_common(p)
    p.set_defaults(func=_compare)


def _pairs(items, flag):
    out = {}
    for it in items or ():
        if "=" not in it:
            raise StylsegError(f"{flag} expects NAME=DIR (e.g. {flag} st=runs/x/stylized/st), got {it!r}")
        k, v = it.split("=", 1)
        if k in out:
            raise StylsegError(f"{flag} {k} given twice")
        out[k.strip()] = v.strip()
    return out


def _compare(args) -> int:
    from ..cli import config_from_args
    from .compare import compare

    cfg = config_from_args(args)
    archs = [a for a in (args.archs.split(",") if args.archs else cfg.seg.archs) if a]
    seeds = args.seeds if args.seeds is not None else cfg.seg.seeds
    compare(args.train, _pairs(args.arm, "--arm"), _pairs(args.test, "--test"), archs, seeds, args.out, cfg,
            oracle_dir=args.oracle, device=cfg.device)
    print((Path(args.out) / "results.md").read_text())
    return 0
