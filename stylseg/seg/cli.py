"""``stylseg seg train | predict | compare``."""

from __future__ import annotations

from pathlib import Path

from ..utils import StylsegError


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


def register(parser) -> None:
    from ..cli import add_common

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("train", help="train a segmenter on a paired folder")
    p.add_argument("--arch", required=True, help="unet | unetpp | pranet")
    p.add_argument("--train", required=True, help="paired folder (images/ + masks/)")
    p.add_argument("--val", default=None, help="paired folder scored each epoch (Dice)")
    p.add_argument("--out", required=True, help="output folder (checkpoints/, model/, history.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over when --out holds a run made from other input or settings")
    add_common(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="probability maps (8-bit PNG, original size) of a folder of images")
    p.add_argument("--model", required=True, help="model folder written by `stylseg seg train`")
    p.add_argument("--input", required=True, help="paired folder or folder of images")
    p.add_argument("--out", required=True, help="folder for <stem>.png maps")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=_predict)

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


def _train(args) -> int:
    from ..cli import config_from_args
    from .train import train_segmenter

    cfg = config_from_args(args)
    seed = args.seed if args.seed is not None else cfg.seed
    out = train_segmenter(args.arch, args.train, args.out, cfg, val_dir=args.val, seed=seed, device=cfg.device,
                          overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _predict(args) -> int:
    from .predict import predict_folder

    out = predict_folder(args.model, args.input, args.out, device=args.device)
    print(f"wrote {out}")
    return 0


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
