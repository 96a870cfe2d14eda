"""Wheels for a GPU machine that has torch but not the kit's other packages, and no internet.

    make gpu-wheels                        # here, with internet: the wheels into .whl/
    python tools/gpu_wheels.py --dest .whl [--python 3.12] [--have have.txt] [--list]

Walks the requirements of the kit's dependencies as this environment has them installed, leaves out what the
GPU machine already holds (``--have``: a file with one package name a line; default: the CUDA image of the
machines this kit was checked on, which carries torch, numpy, scipy, timm, accelerate, matplotlib, ...), and
downloads the rest as wheels for that machine's Python (``--python``, manylinux x86-64, no dependencies
resolved again). ``make gpu-check`` there installs them from ``.whl/`` into a folder on ``PYTHONPATH`` without any
network. ``--list`` only prints the names and versions.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, Set

ROOT = Path(__file__).resolve().parents[1]

#: what the kit itself needs on the GPU machine (the notebook chain included)
ROOTS = ("diffusers", "open_clip_torch", "lpips", "segmentation-models-pytorch", "pysodmetrics", "papermill",
         "nbconvert", "nbformat", "ipykernel", "kornia", "torchmetrics", "safetensors", "accelerate", "tifffile", "tqdm",
         "scikit-image", "matplotlib", "timm", "huggingface_hub")

#: packages the CUDA image already holds (never downloaded): its python3 has torch and the scientific stack
IMAGE_HAS = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs build certifi
charset-normalizer click cloudpickle colorama contourpy cycler cython einops filelock fonttools frozenlist fsspec
h11 h5py hf-xet httpcore httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict
networkx numpy nvidia-ml-py onnx opencv-python-headless packaging pandas pathspec peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pygments pyparsing pytest python-dateutil pytorch-lightning
pyyaml regex requests rich safetensors scikit-image scikit-learn scipy seaborn sentencepiece setuptools
shellingham six sympy tabulate tensorboard threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchmetrics torchvision tqdm transformers triton typer typing-extensions urllib3 werkzeug wheel wrapt xxhash yarl
zipp""".split()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: Iterable[str], have: Set[str]) -> Dict[str, str]:
    """``{name: version}`` of the installed distributions ``roots`` need, transitively (extras left out), not
    looking into what ``have`` holds (the GPU machine's own torch brings its own CUDA libraries)."""
    seen: Dict[str, str] = {}
    todo = [norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name in have:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a dependency of another platform or Python version
        seen[name] = dist.version
        for req in dist.requires or ():
            if "extra ==" in req:
                continue
            m = re.match(r"[A-Za-z0-9._-]+", req)
            marker = req.split(";", 1)[1] if ";" in req else ""
            if m and ("sys_platform == \"win32\"" not in marker and "platform_system == \"Windows\"" not in marker):
                todo.append(norm(m.group(0)))
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=str(ROOT / ".whl"))
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    ap.add_argument("--have", default="", help="file: package names the GPU machine already has, one a line")
    ap.add_argument("--list", action="store_true", help="print what would be downloaded, download nothing")
    args = ap.parse_args(argv)
    have: Set[str] = {norm(n) for n in (Path(args.have).read_text().split() if args.have else IMAGE_HAS)}
    need = dict(sorted(closure(ROOTS, have).items()))
    for n, v in need.items():
        print(f"{n}=={v}")
    if args.list:
        return 0
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    plats = [f"manylinux_2_{k}_x86_64" for k in (17, 24, 27, 28, 31, 34, 35, 39)] + ["manylinux2014_x86_64",
                                                                                    "manylinux1_x86_64"]
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
            args.python, "--implementation", "cp", "-d", str(dest), "-q"]
    for p in plats:
        base += ["--platform", p]
    failed = []
    for n, v in need.items():
        r = subprocess.run(base + [f"{n}=={v}"], capture_output=True, text=True)
        if r.returncode != 0:  # no wheel of this exact version for that Python: the newest compatible one
            r = subprocess.run(base + [n], capture_output=True, text=True)
        if r.returncode != 0:
            failed.append(n)
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2 ** 20
    print(f"{len(list(dest.glob('*.whl')))} wheels, {size:.1f} MiB in {dest}")
    if failed:
        print(f"no wheel found for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
