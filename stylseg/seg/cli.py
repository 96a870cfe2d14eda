"""``stylseg seg train | predict`` (``seg compare`` is the study's: :mod:`stylseg.study.cli`)."""

from __future__ import annotations


def register(parser):
    """Add ``train`` and ``predict`` to the ``seg`` stage's ``parser``; returns its sub-parsers (the study adds
    ``compare``)."""
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
    return sub


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

