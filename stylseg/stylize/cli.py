"""``stylseg stylize ACTION``: finetune, apply, baseline, score.

    stylseg stylize finetune --diffae RUN/diffae --style RUN/data/style.png \\
        --content RUN/data/source/train --out RUN/finetune --profile smoke
    accelerate launch --multi_gpu --num_processes 4 -m stylseg.cli stylize finetune ... --profile paper
        # data parallel: each process takes 1/4 of every batch, gradients averaged
    stylseg stylize apply --model RUN/finetune --input RUN/data/source/train --out RUN/stylized/st
    stylseg stylize apply --model RUN/finetune --input ... --out RUN/stylized/st_nospn --no-spn
    stylseg stylize apply --mode recon --diffae RUN/diffae --input ... --out RUN/stylized/recon
    stylseg stylize baseline --method histogram --style IMG --input DIR --out DIR
    stylseg stylize score --input RUN/data/source/train --output RUN/stylized/st --target RUN/data/target/test
"""

from __future__ import annotations

import argparse
import json


def register(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_common

    sub = parser.add_subparsers(dest="action", metavar="ACTION")

    p = sub.add_parser("finetune", help="fine-tune D_B + SPN from one style image (writes a stylizer folder)",
                       epilog="Several GPUs: start it with `accelerate launch --multi_gpu --num_processes N -m stylseg.cli "
                              "stylize finetune ...` (or torchrun); stylize.batch_size must be a multiple of N.")
    p.add_argument("--diffae", required=True, help="D_A model folder (stylseg diffae train)")
    p.add_argument("--style", required=True, help="the one target-domain style image (any size or mode)")
    p.add_argument("--content", required=True, help="domain-A training images (paired folder or image folder)")
    p.add_argument("--out", required=True, help="stylizer folder to write (model + history + style pair)")
    p.add_argument("--no-resume", action="store_true", help="start afresh instead of resuming a checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a folder made with other settings")
    add_common(p)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("apply", help="stylize a paired folder (st) or make the D_A round-trip control (recon)")
    p.add_argument("--model", default=None, help="stylizer folder (stylseg stylize finetune)")
    p.add_argument("--input", required=True, help="paired folder (images/ + masks/) to stylize")
    p.add_argument("--out", required=True, help="arm folder to write (images/, masks/, manifest.json)")
    p.add_argument("--mode", default="st", choices=("st", "recon"), help="st (D_B + SPN) or recon (D_A round trip)")
    p.add_argument("--no-spn", action="store_true", help="drop the SPN term (control arm)")
    p.add_argument("--diffae", default=None, help="D_A folder (default: the one recorded in --model)")
    p.add_argument("--upsample", default=None, choices=("bilinear", "detail", "detail_lesion"),
                   help="diffusion size -> seg size (default: the profile's stylize.upsample)")
    p.add_argument("--arm", default=None, help="arm name in the manifest (default: st, st_nospn or recon)")
    p.add_argument("--overwrite", action="store_true",
                   help="make the arm again when --out holds one made from other input or settings")
    add_common(p)
    p.set_defaults(func=_cmd_apply)

    from .baselines import add_baseline_parser

    add_baseline_parser(sub)

    p = sub.add_parser("score", help="structure and style scores of an arm (added to its manifest)")
    p.add_argument("--input", required=True, help="the paired folder the arm was made from")
    p.add_argument("--output", required=True, help="the arm folder")
    p.add_argument("--target", required=True, help="target-domain images (paired folder or image folder)")
    p.add_argument("--oracle", default=None, help="oracle segmenter folder (made with --oracle-train)")
    p.add_argument("--oracle-train", nargs="+", default=None, metavar="DIR",
                   help="labelled paired folders of BOTH domains to train (or reuse) the oracle in --oracle")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_common(p)
    p.set_defaults(func=_cmd_score)


def _cmd_finetune(args) -> int:
    from ..cli import config_from_args
    from ..utils import set_threads
    from .finetune import finetune, load_history

    cfg = config_from_args(args)
    set_threads()
    out = finetune(args.diffae, args.style, args.content, args.out, cfg, resume=not args.no_resume,
                   overwrite=args.overwrite, device=cfg.device)
    print(f"wrote stylizer {out}")
    stand_ins = load_history(out).get("substitute")
    if stand_ins:  # what stood in for published weights (recorded in history.json and config.json too)
        print(f"stand-ins: {stand_ins}")
    return 0


def _cmd_apply(args) -> int:
    from ..cli import config_from_args
    from ..config import parse_set_args
    from ..utils import StylsegError, set_threads
    from .apply import apply_stylizer
    from .stylizer import StylizerRecord, stylizer_apply_config

    if args.mode == "st" and not args.model:
        raise StylsegError("--mode st needs --model DIR (a folder written by `stylseg stylize finetune`)")
    record = StylizerRecord.read(args.model) if args.model else None  # the folder's settings, read once
    if args.model:
        # the stylizer's own settings (its profile, DDIM grid, preset, size) unless a --set changes one
        base = (config_from_args(argparse.Namespace(config=args.config, profile=args.profile, set=[]))
                if args.config or args.profile else None)
        cfg = stylizer_apply_config(args.model, base, parse_set_args(args.set), record=record).override(
            seed=args.seed, device=args.device)
        print(f"applying with preset {cfg.stylize.preset}, t0 {cfg.ddim.t0}, {cfg.ddim.apply_invert_steps} + "
              f"{cfg.ddim.apply_gen_steps} UNet calls, upsample {args.upsample or cfg.stylize.upsample}, sensor "
              f"{cfg.stylize.sensor}, {cfg.data.seg_size} px")
    else:
        cfg = config_from_args(args)
    set_threads()
    out = apply_stylizer(args.model, args.input, args.out, cfg, mode=args.mode, use_spn=not args.no_spn,
                         diffae_dir=args.diffae, device=cfg.device, upsample=args.upsample, arm=args.arm,
                         overwrite=args.overwrite, record=record)
    print(f"wrote arm {out}")
    return 0


def _cmd_score(args) -> int:
    from ..cli import config_from_args
    from ..utils import StylsegError, set_threads
    from ..seg.oracle import train_oracle
    from .scores import format_scores, score_arm

    cfg = config_from_args(args)
    set_threads()
    oracle = args.oracle
    if args.oracle_train:
        if not oracle:
            raise StylsegError("--oracle-train needs --oracle DIR (where the oracle segmenter is cached)")
        oracle = train_oracle(args.oracle_train, oracle, cfg.data.seg_size, seed=cfg.seed, device=cfg.device)
    res = score_arm(args.input, args.output, args.target, oracle=oracle, seed=cfg.seed)
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print(format_scores({"arm": res}))
        if "oracle_dice_ratio" in res:  # the gates need the oracle's Dice
            from . import scores as sc

            v = sc.gate_verdicts(res)
            print(f"gates: style {'PASS' if v['style'] else 'fail'} (P(target) >= {sc.STYLE_P_TARGET_MIN} and FD "
                  f"ratio <= {sc.STYLE_FD_RATIO_MAX}), lesion {'PASS' if v['lesion'] else 'fail'} (around the lesion "
                  f">= {sc.LESION_SSIM_MIN} and oracle Dice ratio >= {sc.ORACLE_DICE_RATIO_MIN})")
    return 0
