"""The weights registry: every pretrained file the kit can load, with its source and checksum.

``stylseg weights list | fetch NAME | path NAME``. Files live in
``utils.weights_dir()/<name>/<file>`` (``$STYLSEG_WEIGHTS_DIR``, default
``~/.cache/stylseg/weights``). Library code calls :func:`resolve`, which never downloads:
a missing file raises a :class:`~stylseg.utils.StylsegError` saying how to fetch it or where
to put it by hand. Offline, ``fetch`` fails at once with the same directions.

Checksums: the OpenAI CLIP URL's folder is the file's full sha256 (open_clip verifies it the
same way); torchvision's and Res2Net's file names embed only the first hex digits of the sha256
(``resnet18-f37072fd.pth``), which is verified; the hub file has no published digest. ``weights
list`` says which is which. Weights are verified when they are used (:func:`resolve`), not only
when fetched: by the published sha256, and by the full sha256 recorded next to the file when it was
fetched or first used (``<file>.sha256.json``), which is what catches a file replaced or damaged
later where only a prefix, or nothing, is published. The record is keyed by the file's size and
modification time, so an unchanged file is not hashed again.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .downloads import download_hf, download_url
from .utils import Registry, StylsegError, weights_dir, write_json


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained file: a URL or a Hugging Face hub file, and how to check it."""

    name: str
    filename: str
    description: str
    url: str = ""
    hf_repo: str = ""
    hf_filename: str = ""
    sha256: Optional[str] = None
    sha256_prefix: Optional[str] = None
    used_by: str = ""
    license: str = ""
    #: a web page to download the file from by hand, for files without a direct URL (Google Drive folders)
    page: str = ""

    @property
    def manual(self) -> bool:
        """True when the kit cannot download the file itself: the user downloads it from ``page``."""
        return not (self.url or self.hf_repo)

    @property
    def source(self) -> str:
        if self.manual:
            return self.page
        return self.url or f"hf://{self.hf_repo}/{self.hf_filename}"

    @property
    def checksum(self) -> str:
        """What is published to check the file against (``weights list`` prints it)."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return (f"sha256 {self.sha256_prefix}... (only this prefix is published; the full sha256 is recorded "
                    f"at fetch and checked at every use)")
        if self.manual:
            return "none published: the full sha256 is recorded on first import and checked at every use"
        return "no published checksum (the full sha256 is recorded at fetch and checked at every use)"

    def manual_url(self) -> str:
        if self.manual:
            return self.page
        return self.url or f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.hf_filename}"


WEIGHTS: Registry = Registry("weights")

_CLIP_SHA = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
WEIGHTS.add("clip-vit-b-32-openai", WeightsEntry(
    "clip-vit-b-32-openai", "ViT-B-32.pt", "OpenAI CLIP ViT-B/32 (open_clip 'ViT-B-32', pretrained 'openai'), 338 MB",
    url=f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA}/ViT-B-32.pt", sha256=_CLIP_SHA,
    used_by="stylize: CLIP directional loss (embedder=clip); open_clip.create_model('ViT-B-32', pretrained=PATH)",
    license="MIT (OpenAI CLIP)"))
for _n, _f, _mb in (("resnet18", "resnet18-f37072fd.pth", 45), ("resnet34", "resnet34-b627a593.pth", 83),
                    ("resnet50", "resnet50-0676ba61.pth", 98)):
    WEIGHTS.add(f"{_n}-imagenet", WeightsEntry(
        f"{_n}-imagenet", _f, f"torchvision {_n} ImageNet-1k (IMAGENET1K_V1), {_mb} MB",
        url=f"https://download.pytorch.org/models/{_f}", sha256_prefix=_f.split("-")[1].split(".")[0],
        used_by="seg: U-Net / U-Net++ encoder (torchvision state dict, load into the smp encoder without fc.*)",
        license="BSD-3-Clause (torchvision)"))
WEIGHTS.add("vgg16-imagenet", WeightsEntry(
    "vgg16-imagenet", "vgg16-397923af.pth",
    "torchvision vgg16 ImageNet-1k (IMAGENET1K_V1), 528 MB: the trunk of LPIPS",
    url="https://download.pytorch.org/models/vgg16-397923af.pth", sha256_prefix="397923af",
    used_by="stylize: LPIPS (lpips.LPIPS(net='vgg'), as OSASIS) of the osasis loss set's style-pair reconstruction "
            "(stylize.recon_perceptual) and notebook 05's lpips_to_input; its features.* load into the lpips trunk",
    license="BSD-3-Clause (torchvision); the LPIPS linear layers ship with the lpips package (BSD-2-Clause)"))
WEIGHTS.add("res2net50d-imagenet", WeightsEntry(
    "res2net50d-imagenet", "model.safetensors", "timm res2net50d.in1k (Res2Net-50 26w x 4s, deep stem, avg-pool "
    "shortcut: the v1b design), 102 MB", hf_repo="timm/res2net50d.in1k", hf_filename="model.safetensors",
    used_by="seg: PraNet backbone (timm.create_model('res2net50d', pretrained_cfg_overlay=dict(file=PATH)))",
    license="Apache-2.0 (timm) / Res2Net"))
WEIGHTS.add("res2net50-v1b-26w-4s", WeightsEntry(
    "res2net50-v1b-26w-4s", "res2net50_v1b_26w_4s-3cf99910.pth",
    "Res2Net-50 v1b 26w x 4s ImageNet weights of the Res2Net authors, as PraNet's code loads them, 98 MB",
    url="https://shanghuagao.oss-cn-beijing.aliyuncs.com/res2net/res2net50_v1b_26w_4s-3cf99910.pth",
    sha256_prefix="3cf99910", used_by="seg: PraNet backbone in its original form (optional)",
    license="see github.com/Res2Net/Res2Net-PretrainedModels"))
#: the published Diffusion Autoencoders (Preechakul et al. 2022): Google Drive folders linked from the README,
#: so the user downloads them by hand; no checksum is published (the first import records one)
_DIFFAE_PAGE = "https://github.com/phizaz/diffae#checkpoints"
WEIGHTS.add("diffae-ffhq256-autoenc", WeightsEntry(
    "diffae-ffhq256-autoenc", "last.ckpt",
    "DiffAE FFHQ 256 px, autoencoding only (checkpoints/ffhq256_autoenc/last.ckpt): the D_A that OSASIS and the "
    "paper start from, 168.5 M parameters", page=_DIFFAE_PAGE,
    used_by="diffusion: D_A of the paper profile (diffae.init); `stylseg diffae import` makes a kit model folder",
    license="MIT (Diffusion Autoencoders)"))
WEIGHTS.add("diffae-ffhq256-autoenc-latent", WeightsEntry(
    "diffae-ffhq256-autoenc-latent", "last.ckpt",
    "DiffAE FFHQ 256 px with its latent DDIM (checkpoints/ffhq256_autoenc_latent/last.ckpt): the same autoencoder "
    "plus latent_net, conds_mean, conds_std", page=_DIFFAE_PAGE,
    used_by="diffusion: optional; `stylseg diffae import` takes its autoencoder and its z_sem statistics",
    license="MIT (Diffusion Autoencoders)"))


def path(name: str) -> Path:
    """Where the file of ``name`` lives (whether or not it is there)."""
    e = WEIGHTS.get(name)
    return weights_dir() / e.name / e.filename


def resolve(name: str) -> Path:
    """The local file of the weights ``name``, verified (:func:`verify_local`); raises :class:`StylsegError`
    when absent or when it fails the check (never downloads: library calls do not fetch what the user did
    not ask for)."""
    e = WEIGHTS.get(name)
    p = path(name)
    if not p.is_file():
        if e.manual:
            raise StylsegError(f"weights {name} not found at {p}; download {e.filename} by hand from {e.page} "
                               f"({e.description}) and put it at {p}")
        raise StylsegError(f"weights {name} not found at {p}; run `stylseg weights fetch {name}` on a machine with "
                           f"internet, or download {e.manual_url()} and put it at {p}")
    verify_local(name)
    return p


def _record_path(p: Path) -> Path:
    return p.with_name(p.name + ".sha256.json")


def verify_local(name: str) -> str:
    """Check the local file of ``name`` by its full sha256; returns it.

    The file must match the published sha256 (or prefix), and the full sha256 recorded next to it when it
    was fetched or first used (``<file>.sha256.json``). An unchanged file (same size and modification time
    as recorded) is not hashed again. Raises :class:`StylsegError` naming the file and the fix."""
    import json

    from .downloads import verify

    e = WEIGHTS.get(name)
    p = path(name)
    st = p.stat()
    rec_path = _record_path(p)
    rec = {}
    if rec_path.is_file():
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            rec = {}
    pinned = str(rec.get("sha256") or "")
    if pinned and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns \
            and (not e.sha256 or pinned == e.sha256) and pinned.startswith((e.sha256_prefix or "").lower()):
        return pinned
    fix = f"delete it and run `stylseg weights fetch {name}`"
    try:
        digest = verify(p, e.sha256, e.sha256_prefix)
    except StylsegError:
        raise StylsegError(f"{p}: weights {name} fail their checksum (published: {e.checksum.split(' (')[0]}); the file "
                           f"is damaged or another version: {fix}") from None
    if pinned and digest != pinned:
        raise StylsegError(f"{p}: weights {name} changed since they were fetched (sha256 {digest}, recorded "
                           f"{pinned} in {rec_path.name}); the file was replaced or damaged: {fix}")
    write_json(rec_path, {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "source": e.source})
    return digest


def fetch(name: str, progress: bool = True) -> Path:
    """Download the weights ``name`` into the weights folder (verified, its full sha256 recorded); returns
    the path. A file already there is verified and kept."""
    e = WEIGHTS.get(name)
    dest = path(name)
    if e.manual:
        if dest.is_file():
            return dest
        raise StylsegError(f"weights {name} cannot be downloaded by the kit (no direct link is published); download "
                           f"{e.filename} by hand from {e.page} and put it at {dest}")
    if e.url:
        got = download_url(e.url, dest, sha256=e.sha256, sha256_prefix=e.sha256_prefix, progress=progress)
    else:
        got = download_hf(e.hf_repo, e.hf_filename, dest, sha256=e.sha256, sha256_prefix=e.sha256_prefix)
    verify_local(name)
    return got


def list_weights() -> List[Dict[str, object]]:
    """One dict per entry: name, file, present, path, source, checksum, description, used_by."""
    out = []
    for name, e in WEIGHTS.items():
        p = path(name)
        out.append({"name": name, "file": e.filename, "present": p.is_file(), "path": str(p), "source": e.source,
                    "checksum": e.checksum, "description": e.description, "used_by": e.used_by,
                    "license": e.license})
    return out


# --------------------------------------------------------------------------- CLI
def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    a = sub.add_parser("list", help="list the registry and what is present locally")
    a.set_defaults(func=_cmd_list)
    a = sub.add_parser("fetch", help="download (and verify) weights by name")
    a.add_argument("names", nargs="+", metavar="NAME")
    a.set_defaults(func=_cmd_fetch)
    a = sub.add_parser("path", help="print the local path of weights NAME (exit 1 if absent)")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=_cmd_path)


def _cmd_list(args) -> int:
    print(f"weights folder: {weights_dir()}  (set STYLSEG_WEIGHTS_DIR to change it)")
    for r in list_weights():
        mark = "present" if r["present"] else "missing"
        print(f"{r['name']:<22} [{mark}] {r['description']}")
        print(f"{'':<22} source: {r['source']}  ({r['checksum']})")
        print(f"{'':<22} used by: {r['used_by']}")
        if r["license"]:
            print(f"{'':<22} licence: {r['license']}")
    return 0


def _cmd_fetch(args) -> int:
    for n in args.names:
        p = fetch(n)
        print(f"{n}: {p}")
    return 0


def _cmd_path(args) -> int:
    WEIGHTS.get(args.name)
    p = path(args.name)
    print(p)
    if not p.is_file():
        print(f"(missing: run `stylseg weights fetch {args.name}`)", file=sys.stderr)
        return 1
    return 0
