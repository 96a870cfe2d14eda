"""``stylseg data ACTION``: synth, check, list, fetch, convert, split, prepare."""

from __future__ import annotations

import argparse
import sys


def register(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common

    sub = p.add_subparsers(dest="action", metavar="ACTION")

    a = sub.add_parser("synth", help="generate a synthetic domain (images/, masks/, domain.json)")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--kind", default="polyp", help="polyp | skin")
    a.add_argument("--domain", default="", help="domain name (default: the kind's source domain); see `data list`")
    a.add_argument("--n", type=int, default=64, help="number of images")
    a.add_argument("--size", type=int, default=128, help="square size in pixels")
    a.add_argument("--seed", type=int, default=0, help="scene seed (same seed = same lesions in every domain)")
    a.set_defaults(func=_synth)

    a = sub.add_parser("check", help="check a paired folder (images/ + masks/); exit 1 naming each bad file")
    a.add_argument("dirs", nargs="+", metavar="DIR")
    a.add_argument("--require-nonempty-masks", action="store_true", help="an empty mask is a problem")
    a.add_argument("--quick", action="store_true",
                   help="read only the image headers (faster; misses truncated images, which the default finds)")
    a.add_argument("--deep", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    a.set_defaults(func=_check)

    a = sub.add_parser("list", help="known public layouts, fetchable datasets and synthetic domains")
    a.set_defaults(func=_list)

    a = sub.add_parser("fetch", help="download a public dataset by name (see `data list`)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--dest", default="", help="folder to extract into (default: the data folder/NAME)")
    a.set_defaults(func=_fetch)

    a = sub.add_parser("convert", help="convert a public layout into a paired folder")
    a.add_argument("layout", metavar="LAYOUT")
    a.add_argument("root", metavar="ROOT", help="the dataset's folder as downloaded")
    a.add_argument("--out", required=True, help="paired output folder")
    a.add_argument("--size", type=int, default=0, help="resize to a square (0 = keep the size)")
    a.add_argument("--subset", default=None, help="subset of the layout (e.g. CVC-ColonDB for pranet-test)")
    a.set_defaults(func=_convert)

    for name, help_ in (("prepare", "materialise a run folder's data: synthetic (default), --source/--target "
                                    "folders, or --protocol on real data"),
                        ("split", "the paper-like real-data protocols (paper-polyp, paper-skin) into a run folder")):
        a = sub.add_parser(name, help=help_)
        a.add_argument("--out", required=True, help="run folder (its data/ part is written)")
        a.add_argument("--kind", default="", help="polyp | skin (default: the config's data.kind)")
        a.add_argument("--data", default="", help="real data root (for --protocol; default: the data folder)")
        a.add_argument("--protocol", default="", required=name == "split", help="paper-polyp | paper-skin")
        if name == "prepare":
            a.add_argument("--source", default="", help="source-domain paired folder (training domain)")
            a.add_argument("--target", default="", help="target-domain paired folder (test domain)")
            a.add_argument("--style", default="", help="style image file or folder (default: one target image)")
        a.add_argument("--styles", type=int, default=1, help="number of style images (styles/style_K.png)")
        add_common(a)
        a.set_defaults(func=_prepare)


def _synth(args) -> int:
    from .synth import generate_domain

    out = generate_domain(args.out, kind=args.kind, domain=args.domain, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {args.n} {args.kind} images to {out}")
    return 0


def _check(args) -> int:
    from .check import check_folder

    bad = 0
    for d in args.dirs:
        rep = check_folder(d, require_nonempty_masks=args.require_nonempty_masks, deep=not args.quick)
        print(rep.summary())
        bad += not rep.ok
    return 1 if bad else 0


def _list(args) -> int:
    from .fetch import FETCH
    from .layouts import describe_layouts
    from .synth import DEFAULT_DOMAINS, SYNTH_DOMAINS

    print("Known layouts (stylseg data convert LAYOUT ROOT --out DIR; prepare/split detect them):")
    print(describe_layouts())
    print("\nDatasets to fetch (stylseg data fetch NAME --dest DIR):")
    for name, e in FETCH.items():
        how = "by hand (licence/login)" if e.manual else ("sha256 verified" if e.verified else "unverified")
        print(f"  {name:<16} {e.description} [layout {e.layout}; {how}]")
        print(f"  {'':<16} {e.homepage}; terms: {e.terms}")
    print("\nSynthetic domains (stylseg data synth --kind KIND --domain NAME):")
    for kind, reg in SYNTH_DOMAINS.items():
        src, tgt = DEFAULT_DOMAINS[kind]
        for name, st in reg.items():
            role = " (default source)" if name == src else (" (default target)" if name == tgt else "")
            print(f"  {kind}/{name}{role}: {st.description}")
    return 0


def _fetch(args) -> int:
    from .fetch import fetch_dataset

    root = fetch_dataset(args.name, args.dest or None)
    print(f"{args.name}: ready at {root}")
    return 0


def _convert(args) -> int:
    from .layouts import materialise

    out = materialise(args.layout, args.root, args.out, size=args.size or None, subset=args.subset)
    print(f"wrote {out}")
    return 0


def _prepare(args) -> int:
    from ..cli import config_from_args
    from ..layout import RunLayout, check_run_format, save_run_config
    from .split import prepare_run_data

    layout = RunLayout(args.out)
    check_run_format(layout.root)
    cfg = config_from_args(args)
    if args.kind:
        cfg = cfg.override(**{"data.kind": args.kind})
    res = prepare_run_data(layout, cfg, kind=args.kind, data_dir=args.data, protocol=args.protocol,
                           source=getattr(args, "source", ""), target=getattr(args, "target", ""),
                           style=getattr(args, "style", ""), styles=args.styles)
    if not layout.config.is_file():
        save_run_config(layout.config, cfg)
    from ..utils import read_json

    doc = read_json(res["split"])
    print(f"{layout.data}: {doc['protocol']} data at {doc['size']} px")
    for k, n in doc["sizes"].items():
        print(f"  {k:<16} {n:5d} pairs")
    print(f"  style            {res['style']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["data"] + sys.argv[1:]))
