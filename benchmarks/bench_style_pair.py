"""How far the style pair's direction reaches, and how far the stylized arms follow it.

The directional losses (both loss sets) ask D_B to change each content image's embedding by the style pair's
change ``E(y_B) - E(x_A_style)``, with a magnitude term that asks for that change's length too. ``x_A_style`` is a
D_A render of the style image: the deeper its depth (``stylize.style_pair_t0``), the less of the style image's look
it keeps, and the longer that change. This benchmark places the style pair on the source-to-target line of the
domain means in the weight-free embedder's space (standardised on the source images, as in fine-tuning):

    along(v) = (v - mean_source) . D / |D|^2,   D = mean_target - mean_source

so the source mean is at 0 and the target mean at 1. For each depth and seed (the seed draws the renders' noise;
fine-tuning uses ``cfg.seed``) and each way of picking ``x_A_style`` among the renders (``--picks``:
``fidelity``, OSASIS's nearest-the-style-image, and ``domain``, nearest the source images' mean, which
``stylize.style_pair_pick`` selects) it prints where ``y_B`` and ``x_A_style`` lie, the pair's reach (their
difference along the line), the cosine of their change with ``D``, and how far the render lies from the source mean
(all the domain pick sees: it needs no target image). With ``--arms``, it prints the same reach for
the outputs of stylized arm folders against their inputs (paired by name): D_B follows the pair's reach, not the
target's, so a pair that reaches 0.7 of the way caps how far the arms go. The target images are the run's
``data/target/test``, which no fine-tuning sees (the method sees one target image); this is a diagnostic.

For the arms it also splits what the style scores see (``stylseg.scores.style_features``: CIELAB moments
and LBP histograms, which no loss uses) into the two groups: how far each group moved toward the target (the
gap-weighted mean over its features of ``(arm - source) / (target - source)``, 1 = at the target) and how much of
the domain classifier's logit each group carries (a logistic regression like the score's, fitted here on the
run's source training images against the target test images). On the synthetic polyp domains the classifier's
decision rests mostly on LBP, the micro-texture at the scoring size, which a diffusion model working at half that
size changes only through its upsampling band and the sensor step (docs/stylization.md).

    python benchmarks/bench_style_pair.py --run runs/gates_cpu [--t0 0.5 0.75 1.0] [--seeds 0 1 2 3] [--tries 16]
        [--picks fidelity domain] [--arms runs/gates_cpu/bench_stylize/*/st_osasis]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run folder with diffae/ and data/ (source/train, target/test, "
                                                 "style.png), e.g. runs/gates_cpu")
    ap.add_argument("--style", default=None, help="style image (default: RUN/data/style.png)")
    ap.add_argument("--t0", type=float, nargs="+", default=[0.25, 0.5, 0.625, 0.75, 0.875, 1.0],
                    help="depths of the D_A renders (fractions of T)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--tries", type=int, default=4, help="renders per pair (stylize.style_pair_tries)")
    ap.add_argument("--steps", type=int, default=5, help="UNet calls per render (ddim.apply_gen_steps)")
    ap.add_argument("--picks", nargs="+", default=["fidelity", "domain"], choices=("fidelity", "domain"),
                    help="how x_A_style is picked among the renders (stylize.style_pair_pick)")
    ap.add_argument("--arms", nargs="*", default=[], help="stylized arm folders (images/ named as the inputs)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from stylseg.stylize.embedders import WeightFreeEmbedder
    from stylseg.stylize.style_pair import make_style_pair
    from stylseg.data.tensors import load_folder_tensor
    from stylseg.stylize.stylizer import diffae_size, load_diffae
    from stylseg.utils import StylsegError

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    style = Path(args.style) if args.style else run / "data" / "style.png"
    for need in (run / "diffae", run / "data" / "source" / "train", run / "data" / "target" / "test", style):
        if not need.exists():
            raise SystemExit(f"{need}: not found (a run folder made by bench_stylize_gates.py or stylseg reproduce "
                             f"has it; pass --run RUN)")
    tic = time.perf_counter()
    diffae = load_diffae(run / "diffae")
    size = diffae_size(diffae)
    src, src_files = load_folder_tensor(run / "data" / "source" / "train", size)
    tgt, _ = load_folder_tensor(run / "data" / "target" / "test", size)
    emb = WeightFreeEmbedder().fit(src)
    with torch.no_grad():
        e_src, e_tgt = emb(src), emb(tgt)
        mean_src = e_src.mean(0)
        d = e_tgt.mean(0) - mean_src
        dd = float(d @ d)
        along = lambda e: ((e - mean_src) @ d) / dd
        cos = lambda v: float(torch.nn.functional.cosine_similarity(v, d, dim=0))
        print(f"{run}: D_A at {size} px, {len(src)} source images, {len(tgt)} target images; "
              f"weight-free embedder, source mean at 0, target mean at 1")
        print(f"the target images themselves: along 1.000 by construction; spread (std of along) "
              f"{float(along(e_tgt).std()):.3f}; the source images: {float(along(e_src).std()):.3f}")
        print(f"{'t0':>6} {'seed':>5} {'pick':>9} {'y_B':>7} {'x_A':>7} {'reach':>7} {'cos':>6} {'dist A':>7}   "
              f"(dist A: the render's distance to the source mean, what pick=domain minimises; the last column: "
              f"the correlation over the seed's renders of the fidelity error with dist A)")
        for t0 in args.t0:
            reaches = {p: [] for p in args.picks}
            for seed in args.seeds:
                scores = {}
                for pick in args.picks:
                    y, xa, sc = make_style_pair(diffae, style, t0, args.steps, args.tries, seed=seed, pick=pick,
                                                embedder=emb, content_mean=mean_src)
                    scores[pick] = sc
                    ey, ex = emb(y)[0], emb(xa)[0]
                    reach = float(along(ey) - along(ex))
                    reaches[pick].append(reach)
                    print(f"{t0:>6.3f} {seed:>5d} {pick:>9} {float(along(ey)):>7.3f} {float(along(ex)):>7.3f} "
                          f"{reach:>7.3f} {cos(ey - ex):>6.3f} {float((ex - mean_src).norm()):>7.2f}", end="")
                    if pick == args.picks[-1] and len(scores) == 2 and args.tries > 2:
                        print(f"   corr {float(torch.corrcoef(torch.stack([scores['fidelity'], scores['domain']]))[0, 1]):+.2f}",
                              end="")
                    print()
            for pick, r in reaches.items():
                t = torch.tensor(r)
                print(f"{t0:>6.3f}  {pick:>9}: mean reach {float(t.mean()):.3f}, range {float(t.min()):.3f}-"
                      f"{float(t.max()):.3f}")
        if args.arms:
            import numpy as np

            from stylseg.data.io import list_images, read_image
            from stylseg.scores import N_LAB, DomainClassifier, style_features

            feats = lambda folder: np.stack([style_features(read_image(p)) for p in list_images(
                folder / "images" if (folder / "images").is_dir() else folder)])
            f_src, f_tgt = feats(run / "data" / "source" / "train"), feats(run / "data" / "target" / "test")
            clf = DomainClassifier().fit(f_src, f_tgt)
            scaler, lr = clf.model[0], clf.model[1]
            gap = f_tgt.mean(0) - f_src.mean(0)
            z_gap = np.abs(gap) / (np.concatenate([f_src, f_tgt]).std(0) + 1e-9)
            groups = {"colour": np.arange(N_LAB), "lbp": np.arange(N_LAB, f_src.shape[1])}

            def split(f):
                reach = (f.mean(0) - f_src.mean(0)) / np.where(np.abs(gap) > 1e-12, gap, 1.0)
                logit = scaler.transform(f) * lr.coef_[0]
                return {g: (float((reach[ix] * z_gap[ix]).sum() / z_gap[ix].sum()), float(logit[:, ix].sum(1).mean()))
                        for g, ix in groups.items()}

            for name, f in (("source images", f_src), ("target images", f_tgt)):
                parts = split(f)
                print(f"{name}: logit colour {parts['colour'][1]:+.1f}, LBP {parts['lbp'][1]:+.1f} "
                      f"(intercept {float(lr.intercept_[0]):+.1f})")
            by_stem = {p.stem: i for i, p in enumerate(src_files)}
            print(f"\n{'reach':>7} {'cos':>6} {'colour':>7} {'LBP':>6} {'logit c':>8} {'logit L':>8} {'P':>6}  "
                  f"arm (embedder reach and cosine vs the inputs; feature-group reach; logit parts; P(target))")
            for arm in args.arms:
                out, files = load_folder_tensor(arm, size)
                missing = [p.name for p in files if p.stem not in by_stem]
                if missing:
                    raise StylsegError(f"{arm}: {missing[0]} has no input of that name in "
                                       f"{run / 'data' / 'source' / 'train'} (pass arms stylized from it)")
                e_out = emb(out)
                e_in = e_src[[by_stem[p.stem] for p in files]]
                delta = e_out - e_in
                c = float(torch.nn.functional.cosine_similarity(delta, d.expand_as(delta), dim=1).mean())
                f_arm = feats(Path(arm))
                parts = split(f_arm)
                print(f"{float((delta @ d).mean() / dd):>7.3f} {c:>6.3f} {parts['colour'][0]:>7.2f} "
                      f"{parts['lbp'][0]:>6.2f} {parts['colour'][1]:>+8.1f} {parts['lbp'][1]:>+8.1f} "
                      f"{float(clf.p_target(f_arm).mean()):>6.3f}  {arm}")
    print(f"total {time.perf_counter() - tic:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
