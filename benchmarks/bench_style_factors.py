"""What the style scores key on: the source scenes rendered with part of the target domain's look.

The synthetic domains differ by groups of rendering parameters (``stylseg.data.synth.DomainStyle``):
the tissue colours, the colour pipeline (gain, cast, gamma, contrast, saturation), the optics
(vignette, darkening toward the lumen, the black circular frame) and the sensor (blur, noise). This
benchmark renders the *same* source scenes with the target's value of one group, of several, or of
all of them, so each arm is a perfect transfer of exactly those factors, and scores each arm like a
stylizer's output (``stylseg.scores.score_arm``: SSIM_S, FD ratio, the domain classifier's
P(target)). It shows which factors a stylizer must transfer for the style gate (P(target) >= 0.7,
FD ratio <= 0.5) to be reachable at all, e.g. whether colour alone can get there, and how the
structure scores judge a perfect transfer (same scenes, so the structure is kept exactly) against
two controls that lose it (the lesion shifted by 3 px; other scenes).

    python benchmarks/bench_style_factors.py [--source clinic --target colon] [--n 128] [--size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

#: the DomainStyle fields of each factor group
GROUPS = {
    "tissue": ("background", "lesion", "lesion_core", "vessel", "vessel_strength", "texture", "specular",
               "lesion_shading"),
    "colour": ("gain", "cast", "gamma", "contrast", "saturation"),
    "optics": ("vignette", "depth_dark", "frame"),
    "sensor": ("blur", "noise", "jpeg"),
}
#: the arms: which groups take the target's values
ARMS = {
    "colour": ("colour",),
    "tissue+colour": ("tissue", "colour"),
    "optics": ("optics",),
    "sensor": ("sensor",),
    "tissue+colour+optics": ("tissue", "colour", "optics"),
    "tissue+colour+sensor": ("tissue", "colour", "sensor"),
    "optics+sensor": ("optics", "sensor"),
    "all (= target)": ("tissue", "colour", "optics", "sensor"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="polyp")
    ap.add_argument("--source", default="clinic")
    ap.add_argument("--target", default="colon")
    ap.add_argument("--n", type=int, default=128, help="source images per arm")
    ap.add_argument("--n-target", type=int, default=64, help="target-domain images the scores compare with")
    ap.add_argument("--size", type=int, default=128, help="px (the cpu profile scores at 128)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="keep the images here (default: a temporary folder)")
    args = ap.parse_args(argv)

    import numpy as np

    from stylseg.data.io import list_images, read_image, write_image
    from stylseg.data.synth import SYNTH_DOMAINS, generate_domain, get_domain
    from stylseg.scores import format_scores, score_arm
    from stylseg.utils import set_threads

    set_threads(args.threads)
    src, tgt = get_domain(args.kind, args.source), get_domain(args.kind, args.target)
    domains = SYNTH_DOMAINS.get(args.kind)
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    root = Path(args.out or tmp.name)
    t0 = time.perf_counter()
    inp = generate_domain(root / "source", args.kind, args.source, args.n, args.size, seed=0, progress=False)
    # the target images the scores compare with: other scenes (seed 1) than the arms'
    target = generate_domain(root / "target", args.kind, args.target, args.n_target, args.size, seed=1,
                             progress=False)
    rows = {}
    for arm, groups in ARMS.items():
        fields = [f for g in groups for f in GROUPS[g]]
        hybrid = dataclasses.replace(src, description=f"{args.source} with {args.target}'s {arm}",
                                     **{f: getattr(tgt, f) for f in fields})
        name = f"_factors_{arm.split(' ')[0].replace('+', '_')}"
        domains.add(name, hybrid)
        # same seed as the source folder: the same scenes (and masks), only the named factors differ
        out = generate_domain(root / name, args.kind, name, args.n, args.size, seed=0, progress=False)
        rows[arm] = score_arm(inp, out, target, write_manifest=False)
    # controls of the structure scores: the lesion moved by 3 px, and other scenes (structure lost)
    for arm, make in (("source, shifted 3 px", lambda i, img: np.roll(img, 3 * args.size // 128, axis=1)),
                      ("other scenes", None)):
        out = root / f"_control_{len(rows)}"
        if make is None:
            generate_domain(out, args.kind, args.source, args.n, args.size, seed=2, progress=False)
        else:
            for i, f in enumerate(list_images(inp / "images")):
                write_image(out / "images" / f.name, make(i, read_image(f)))
        rows[arm] = score_arm(inp, out, target, write_manifest=False)
    print(f"{args.n} {args.source} scenes at {args.size} px rendered with part of {args.target}'s look, scored "
          f"against {args.n_target} {args.target} images ({time.perf_counter() - t0:.0f} s); inputs: "
          f"P(target) {rows['colour']['style_p_target_input']:.3f}, domain classifier held-out accuracy "
          f"{rows['colour']['style_clf_acc']:.2f}")
    print(format_scores(rows, ("structure_ssim", "structure_ssim_lesion", "style_fd_ratio", "style_p_target_output")))
    print("style gate: P(target) >= 0.7 and FD ratio <= 0.5; " + ", ".join(
        f"{a}: {'yes' if r['style_p_target_output'] >= 0.7 and r['style_fd_ratio'] <= 0.5 else 'no'}"
        for a, r in rows.items() if a in ARMS))
    ideal = rows["all (= target)"]
    print(f"the perfect stylizer (the same scenes in the target's whole look) scores SSIM_S {ideal['structure_ssim']:.3f} "
          f"(structure gate >= 0.8: {'met' if ideal['structure_ssim'] >= 0.8 else 'NOT met'}) and SSIM_S around the "
          f"lesion {ideal['structure_ssim_lesion']:.3f} (>= 0.8: {'met' if ideal['structure_ssim_lesion'] >= 0.8 else 'NOT met'})")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
