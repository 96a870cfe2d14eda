"""One command that checks a GPU: the paper profile's speed and memory, and a short paper-sized notebook chain.

    make gpu-check                              # on a GPU machine (installs local wheels from .whl/ when present)
    python tools/gpu_check.py              # the same, without the wheel step
    python tools/gpu_check.py --smoke      # on a CPU: the same measurements at smoke sizes, no notebook chain

On a GPU (about 4 minutes, offline, random weights where none are present) it measures, at the paper profile's
sizes and with its memory settings (mixed precision, gradient checkpointing, micro-batches):

- DiffAE-256 training: images/s and peak GiB at the profile's effective batch;
- one-shot fine-tuning at the profile's batch and step counts: seconds per iteration and peak GiB;
- stylizing a dataset: images/s, and the pipeline's time against the bare UNet calls it makes;
- segmentation (U-Net, U-Net++, PraNet at 256 px): seconds per epoch and peak GiB;
- the notebook chain 00, 02, 04, 05, 06 through papermill at tiny step counts (seconds per notebook);

then prints one table and writes it, with the GPU's name and the torch and CUDA versions, to
``OUT/gpu_check.md`` and ``OUT/gpu_check.json`` (default ``runs/gpu_check``). Each row names its target; a row
that fails says why and the others still run. ``--smoke`` runs the four measurements at smoke sizes in about a
minute on a CPU, so that CI exercises this code.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2 ** 30


class Meter:
    """Wall time and peak device memory of a block (peak memory on CUDA only)."""

    def __init__(self, dev):
        self.dev = dev

    def __enter__(self):
        import torch

        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            self.peak = torch.cuda.max_memory_allocated(self.dev) / GIB
        else:
            self.peak = None
        self.seconds = time.perf_counter() - self.t
        return False


def environment(dev) -> Dict[str, Any]:
    import torch

    out = {"device": str(dev), "torch": torch.__version__, "cuda": torch.version.cuda or "-",
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1),
                   bf16=bool(torch.cuda.is_bf16_supported()))
    else:
        out.update(gpu="none (CPU)", cpu=platform.processor() or platform.machine(),
                   threads=torch.get_num_threads())
    return out


def _data(root: Path, n: int, size: int, domain: str = "clinic", seed: int = 0) -> Path:
    from stylseg.data.synth import generate_domain

    return generate_domain(root, "polyp", domain, n=n, size=size, seed=seed, progress=False)


def bench_diffae(cfg, dev, work: Path, steps: int, n_images: int) -> Dict[str, Any]:
    """D_A training at the profile's effective batch: images/s over the steps after the first two, peak GiB."""
    from stylseg.diffusion.train import train_diffae

    dc = cfg.diffae
    cfg = cfg.override(**{"diffae.train_steps": steps, "diffae.sample_every": 10 ** 6,
                          "diffae.checkpoint_every": 10 ** 6, "diffae.init": "train"})
    data = _data(work / "diffae_data", n_images, dc.image_size)
    with Meter(dev) as m:
        out = train_diffae(data, work / "diffae", cfg, resume=False, device=str(dev), progress=False,
                           log=lambda *a: None)
    hist = json.loads((out / "history.json").read_text())
    t = hist["seconds"]
    k = min(2, len(t) - 1)  # leave out the first steps (allocation, cuDNN autotuning)
    rate = (len(t) - 1 - k) * dc.batch_size / max(t[-1] - t[k], 1e-9) if len(t) > k + 1 else float("nan")
    return {"figure": f"{rate:.1f} images/s", "value": rate, "peak_gib": m.peak,
            "setting": f"{dc.image_size} px, batch {dc.batch_size}" + _memory_setting(cfg, "diffae")}


def bench_finetune(cfg, dev, work: Path, iterations: int, n_images: int) -> Dict[str, Any]:
    """One-shot fine-tuning: seconds per iteration (history), peak GiB (setup and style pair included)."""
    from stylseg.diffusion.model import DiffAE
    from stylseg.stylize.finetune import finetune
    from stylseg.stylize.perceptual import resolve_recon

    import torch

    torch.manual_seed(0)
    d_a = work / "ft_diffae"
    if not (d_a / "model.safetensors").is_file():
        DiffAE.from_config(cfg.diffae, cfg.ddim).save_pretrained(d_a)
    size = cfg.diffae.image_size
    src = _data(work / "ft_src", n_images, size)
    style = _data(work / "ft_style", 1, size, domain="colon", seed=1) / "images" / "0000.png"
    cfg = cfg.override(**{"stylize.iterations": iterations})
    with Meter(dev) as m:
        ft = finetune(d_a, style, src, work / "ft", cfg, device=str(dev), progress=False, overwrite=True)
    hist = json.loads((ft / "history.json").read_text())["iterations"]
    per = [r["seconds"] for r in hist][1:] or [r["seconds"] for r in hist]  # the first iteration warms up
    s_it = sum(per) / len(per)
    sc = cfg.stylize
    return {"figure": f"{s_it:.2f} s/iteration", "value": s_it, "peak_gib": m.peak, "model_dir": ft,
            "setting": f"batch {sc.batch_size}, {cfg.ddim.finetune_invert_steps}+{cfg.ddim.finetune_gen_steps} steps, "
                       f"embedder {sc.embedder}, recon {resolve_recon(sc.recon_perceptual)}"
                       + _memory_setting(cfg, "stylize")}


def bench_apply(cfg, dev, work: Path, model_dir: Path, n_images: int) -> Dict[str, Any]:
    """Stylizing a folder: images/s, and the pipeline's time over the bare UNet calls it makes (target <= 1.1)."""
    import torch

    from stylseg.stylize.apply import apply_stylizer
    from stylseg.stylize.stylizer import Stylizer

    src = _data(work / "apply_src", n_images, max(cfg.diffae.image_size, cfg.data.seg_size), seed=2)
    with Meter(dev) as m:
        apply_stylizer(model_dir, src, work / "st", cfg, device=str(dev), progress=False)
    st = Stylizer.load(model_dir, device=str(dev))
    unet, S = st.unet_b.eval(), st.size
    bs = min(cfg.stylize.apply_batch_size, n_images)
    calls = cfg.ddim.apply_invert_steps + cfg.ddim.apply_gen_steps
    x = torch.randn(bs, 3, S, S, device=dev)
    tv = torch.full((bs,), 10, device=dev, dtype=torch.long)
    z = st.diffae.encode(x)
    with torch.no_grad(), Meter(dev) as bare:
        for _ in range(-(-n_images // bs) * calls):
            unet(x, tv, z)
    ratio = m.seconds / max(bare.seconds, 1e-9)
    return {"figure": f"{n_images / m.seconds:.2f} images/s, pipeline {ratio:.2f}x its UNet calls", "value": ratio,
            "peak_gib": m.peak, "setting": f"{calls} UNet calls per image, batch {bs}"}


def bench_seg(cfg, dev, work: Path, arch: str, n_images: int) -> Dict[str, Any]:
    """Segmentation: seconds of the second epoch (the first warms up), peak GiB."""
    from stylseg.seg.train import train_segmenter

    data = _data(work / "seg_data", n_images, cfg.seg.image_size)
    cfg = cfg.override(**{"seg.epochs": 2, "seg.pretrained": False})
    with Meter(dev) as m:
        train_segmenter(arch, data, work / "seg" / arch, cfg, device=str(dev), progress=False)
    hist = json.loads((work / "seg" / arch / "history.json").read_text())
    s_ep = hist[-1]["seconds"]
    return {"figure": f"{s_ep:.2f} s/epoch", "value": s_ep, "peak_gib": m.peak,
            "setting": f"{n_images} images at {cfg.seg.image_size} px, batch {cfg.seg.batch_size}"}


def notebook_chain(work: Path, profile: str) -> Dict[str, Any]:
    """Notebooks 00, 02, 04, 05, 06 through papermill at tiny step counts (paper sizes)."""
    from stylseg.reproduce import pipeline_notebooks, run_notebooks, write_run_config

    run = work / "chain"
    sets = ["data.n_per_domain=24", "diffae.init=train", "diffae.train_steps=20", "diffae.sample_every=1000000",
            "stylize.iterations=2", "stylize.clip_pretrained=none", "stylize.recon_perceptual=auto", "seg.epochs=1",
            "seg.pretrained=false",
            "eval.arms=direct,st,recon,oracle"]
    write_run_config(run, profile, sets)
    nbs = [p for p in pipeline_notebooks() if p.name[:2] in ("00", "02", "04", "05", "06")]
    recs = run_notebooks(run, {"PROFILE": profile}, nbs, log=lambda *a: None, config_overrides=dict(
        s.split("=", 1) for s in sets))
    total = sum(r["seconds"] for r in recs)
    return {"figure": f"{total:.0f} s (" + ", ".join(f"{r['notebook'][:2]} {r['seconds']:.0f} s" for r in recs) + ")",
            "value": total, "peak_gib": None, "setting": "; ".join(sets)}


def _memory_setting(cfg, stage: str) -> str:
    """The memory settings a stage ran with, as the row's setting names them."""
    from stylseg.config import memory_settings

    s = memory_settings(cfg, stage)
    return (", " + ", ".join(f"{k} {v}" for k, v in s.items())) if s else ""


#: the targets of the paper profile on one H100-class GPU
TARGETS = {"diffae": "within 40 GiB, images/s within 20% of batch 32 at once (59.6 on an H200)",
           "finetune": "<= 16 GiB, <= 3 s/iteration", "apply": "pipeline <= 1.1x its UNet calls",
           "seg": "fine as is (<= 2 GiB)", "chain": "about 2 minutes"}


def run(smoke: bool, out: Path, device: str = "auto", chain: bool = True, log: Callable[[str], None] = print
        ) -> Dict[str, Any]:
    import torch

    from stylseg.config import get_profile
    from stylseg.utils import resolve_device, set_threads

    dev = resolve_device(device)
    if dev.type == "cpu":
        set_threads()
    profile = "smoke" if smoke else "paper"
    cfg = get_profile(profile).override(**{"stylize.checkpoint_every": 10 ** 6, "stylize.clip_pretrained": "none",
                                           "stylize.recon_perceptual": "auto"})  # LPIPS where its file is present
    if smoke:
        sizes = {"diffae_steps": 6, "diffae_images": 16, "ft_iterations": 2, "ft_images": 8, "apply_images": 8,
                 "seg_images": 16, "archs": ("unet",)}
    else:
        sizes = {"diffae_steps": 10, "diffae_images": 64, "ft_iterations": 3, "ft_images": 16, "apply_images": 16,
                 "seg_images": 178, "archs": ("unet", "unetpp", "pranet")}
    env = environment(dev)
    log("stylseg GPU check: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    rows: List[Dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="stylseg_gpu_check_"))

    def row(stage: str, target: str, fn: Callable[[], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        t = time.perf_counter()
        try:
            r = fn()
            r.update(stage=stage, target=target, status="ok")
        except Exception as e:  # one failing row must not hide the others
            r = {"stage": stage, "target": target, "status": f"failed: {type(e).__name__}: {e}", "figure": "-",
                 "value": None, "peak_gib": None, "setting": "", "trace": traceback.format_exc(limit=6)}
        r["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(r)
        peak = f", peak {r['peak_gib']:.1f} GiB" if r.get("peak_gib") is not None else ""
        log(f"  {stage:<28} {r['figure']}{peak}  [{r['status']}, {r['seconds']} s]")
        return r

    torch.manual_seed(0)
    row("DiffAE training", TARGETS["diffae"],
        lambda: bench_diffae(cfg, dev, work, sizes["diffae_steps"], sizes["diffae_images"]))
    ft = row("one-shot fine-tuning", TARGETS["finetune"],
             lambda: bench_finetune(cfg, dev, work, sizes["ft_iterations"], sizes["ft_images"]))
    if ft and ft.get("model_dir"):
        row("stylizing a dataset", TARGETS["apply"],
            lambda: bench_apply(cfg, dev, work, ft["model_dir"], sizes["apply_images"]))
    for arch in sizes["archs"]:
        row(f"segmentation ({arch})", TARGETS["seg"], lambda a=arch: bench_seg(cfg, dev, work, a, sizes["seg_images"]))
    if chain and not smoke:
        row("notebook chain (papermill)", TARGETS["chain"], lambda: notebook_chain(work, profile))
    result = {"environment": env, "profile": profile, "rows": [{k: (str(v) if isinstance(v, Path) else v)
                                                                 for k, v in r.items()} for r in rows]}
    write(result, out)
    return result


def markdown(result: Dict[str, Any]) -> str:
    env = result["environment"]
    head = (f"GPU check, {env['date']}: {env['gpu']}" + (f" ({env['gpu_memory_gib']} GiB)" if "gpu_memory_gib" in env
                                                         else "")
            + f", torch {env['torch']}, CUDA {env['cuda']}, profile {result['profile']}")
    lines = [head, "", "| stage | setting | figure | peak GiB | target | ran |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        lines.append(f"| {r['stage']} | {r.get('setting', '')} | {r['figure']} | {peak} | {r['target']} | "
                     f"{r['status']} |")
    return "\n".join(lines) + "\n"


def write(result: Dict[str, Any], out: Path) -> None:
    from stylseg.utils import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_check.json", result)
    with atomic_path(out / "gpu_check.md") as tmp:
        Path(tmp).write_text(markdown(result))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="smoke sizes on any device, no notebook chain (about 1 min)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--no-chain", action="store_true", help="skip the papermill notebook chain")
    ap.add_argument("--out", default=str(ROOT / "runs" / "gpu_check"), help="folder for gpu_check.md and .json")
    args = ap.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU here: run `python tools/gpu_check.py --smoke` for the CPU check", file=sys.stderr)
        return 2
    result = run(args.smoke, Path(args.out), device=args.device, chain=not args.no_chain)
    print()
    print(markdown(result))
    print(f"written to {Path(args.out) / 'gpu_check.md'}")
    return 0 if all(r["status"] == "ok" for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
