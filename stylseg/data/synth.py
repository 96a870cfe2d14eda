"""Built-in synthetic domains: procedural endoscopy (polyp) and dermoscopy (skin) scenes with
a lesion and its exact mask.

A *scene* (lesion position, size and shape, folds, vessels, hairs, textures) is drawn from
``(seed, index)`` only; a *domain* only changes how the scene looks (tissue colours, colour
cast, illumination and vignetting, contrast, blur, noise, JPEG, a black endoscope or
dermatoscope frame, skin tone). So image ``i`` of seed ``s`` has the SAME lesion and the
SAME mask in every domain of a kind, and the lesion statistics (position, size, shape) are
identical across domains by construction: only the appearance shifts, which is the shift
that stylization is meant to bridge.

The lesion boundary is analytic, ``r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k))``
in a rotated, stretched frame, so the mask is exact at any size. Lesions are placed so
that the black frames of the framed domains never cover them.

``SYNTH_DOMAINS.get(kind).get(domain)`` gives a domain's :class:`DomainStyle`;
:func:`generate_domain` writes ``out/images/NNNN.png``, ``out/masks/NNNN.png`` and
``out/domain.json``. Parameters of each domain are documented in ``docs/data.md``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from ..utils import Registry, StylsegError, read_json, write_json

#: bump when the renderer changes (a different version gives different images)
GENERATOR_VERSION = 2  # 2: colon retuned (v1's colon was barely learnable; no colour transfer helped)
KINDS = ("polyp", "skin")

RGB = Tuple[float, float, float]


@dataclass(frozen=True)
class DomainStyle:
    """How a domain renders a scene (all colours linear-ish RGB in [0, 1]).

    Tissue: ``background`` (mucosa / skin), ``lesion`` (polyp surface / pigment),
    ``lesion_core`` (skin: darker pigment centre; polyp: unused), ``vessel`` (polyp vessels /
    skin erythema blotches), ``texture`` (albedo texture amplitude).
    Device: ``gain`` (overall exposure), ``vignette`` (illumination drop at the corners,
    0-1), ``depth_dark`` (polyp: darkening towards the lumen), ``cast`` (per-channel gains),
    ``gamma``, ``contrast`` (around mid-grey), ``saturation``, ``blur`` (Gaussian sigma in
    pixels at 128 px, scaled with the size), ``noise`` (std of additive Gaussian noise),
    ``jpeg`` (quality 1-95, 0 = lossless), ``frame`` (radius of the circular field of view in
    units of the half-width, 0 = none; corners outside it are black), ``specular``
    (strength of specular highlights), ``hair`` (skin: share of the scene's hairs drawn),
    ``lesion_shading`` (polyp: depth of the raised polyp's shading).
    """

    description: str
    background: RGB
    lesion: RGB
    lesion_core: RGB = (0.0, 0.0, 0.0)
    vessel: RGB = (0.55, 0.12, 0.12)
    vessel_strength: float = 0.35
    texture: float = 0.08
    gain: float = 1.0
    vignette: float = 0.2
    depth_dark: float = 0.4
    cast: RGB = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    blur: float = 0.0
    noise: float = 0.01
    jpeg: int = 0
    frame: float = 0.0
    specular: float = 0.8
    hair: float = 0.0
    lesion_shading: float = 0.6


SYNTH_DOMAINS: Registry = Registry("synthetic data kind")
POLYP_DOMAINS: Registry = Registry("polyp domain")
SKIN_DOMAINS: Registry = Registry("skin domain")
SYNTH_DOMAINS.add("polyp", POLYP_DOMAINS)
SYNTH_DOMAINS.add("skin", SKIN_DOMAINS)

#: (source, target) used when a run names no domain
DEFAULT_DOMAINS: Dict[str, Tuple[str, str]] = {"polyp": ("clinic", "colon"), "skin": ("derm_light", "derm_pink")}

POLYP_DOMAINS.add("clinic", DomainStyle(
    description="CVC-ClinicDB-like: bright, sharp, wide-angle, pinkish-red mucosa, paler polyp, strong highlights",
    background=(0.84, 0.48, 0.42), lesion=(0.93, 0.66, 0.58), vessel=(0.62, 0.10, 0.14), vessel_strength=0.45,
    texture=0.07, gain=0.98, vignette=0.15, depth_dark=0.5, cast=(1.0, 1.0, 1.0), gamma=1.0, contrast=1.1,
    saturation=0.85, blur=0.0, noise=0.008, jpeg=0, frame=0.0, specular=0.9, lesion_shading=0.55))
POLYP_DOMAINS.add("colon", DomainStyle(
    description="CVC-ColonDB-like: warm (yellowish) cast, low contrast, dimmer, vignette, black frame, blur, noise",
    background=(0.78, 0.50, 0.44), lesion=(0.95, 0.72, 0.64), vessel=(0.62, 0.10, 0.14), vessel_strength=0.3,
    texture=0.06, gain=0.85, vignette=0.45, depth_dark=0.45, cast=(1.06, 0.95, 0.72), gamma=0.9, contrast=0.7,
    saturation=0.7, blur=1.2, noise=0.03, jpeg=0, frame=1.18, specular=0.6, lesion_shading=0.6))
POLYP_DOMAINS.add("etis", DomainStyle(
    description="ETIS-Larib-like: low contrast, greenish-grey cast, mild blur, heavy JPEG compression",
    background=(0.62, 0.50, 0.48), lesion=(0.92, 0.74, 0.62), vessel=(0.50, 0.30, 0.28), vessel_strength=0.3,
    texture=0.06, gain=0.9, vignette=0.35, depth_dark=0.45, cast=(0.82, 1.02, 0.92), gamma=0.9, contrast=0.7,
    saturation=0.55, blur=0.7, noise=0.02, jpeg=18, frame=0.0, specular=0.6, lesion_shading=0.6))

SKIN_DOMAINS.add("derm_light", DomainStyle(
    description="light skin, white background, sharp dermoscope, brown lesion, few hairs",
    background=(0.94, 0.80, 0.72), lesion=(0.58, 0.38, 0.26), lesion_core=(0.36, 0.21, 0.13),
    vessel=(0.90, 0.60, 0.58), vessel_strength=0.1, texture=0.05, gain=1.0, vignette=0.1, cast=(1.0, 1.0, 1.0),
    gamma=1.0, contrast=1.0, saturation=1.0, blur=0.3, noise=0.01, jpeg=0, frame=0.0, specular=0.15, hair=0.35))
SKIN_DOMAINS.add("derm_pink", DomainStyle(
    description="pink/red erythematous background, circular dermatoscope frame, vignette, warmer and softer",
    background=(0.92, 0.58, 0.58), lesion=(0.60, 0.33, 0.30), lesion_core=(0.40, 0.18, 0.17),
    vessel=(0.85, 0.30, 0.32), vessel_strength=0.55, texture=0.06, gain=0.92, vignette=0.45, cast=(1.05, 0.93, 0.95),
    gamma=1.1, contrast=0.9, saturation=1.2, blur=1.0, noise=0.02, jpeg=0, frame=1.08, specular=0.25, hair=0.2))
SKIN_DOMAINS.add("derm_dark", DomainStyle(
    description="darker skin tone, dark-brown lesion, lower contrast, more hair, noise and JPEG",
    background=(0.58, 0.40, 0.30), lesion=(0.34, 0.20, 0.12), lesion_core=(0.20, 0.11, 0.07),
    vessel=(0.50, 0.28, 0.22), vessel_strength=0.15, texture=0.08, gain=0.9, vignette=0.25, cast=(1.0, 0.97, 0.92),
    gamma=1.05, contrast=0.8, saturation=0.9, blur=0.5, noise=0.03, jpeg=40, frame=0.0, specular=0.1, hair=0.8))


def get_domain(kind: str, domain: str) -> DomainStyle:
    """The :class:`DomainStyle` of ``kind``/``domain``; unknown names list the valid ones."""
    return SYNTH_DOMAINS.get(kind).get(domain)


def domain_names(kind: str) -> list:
    return SYNTH_DOMAINS.get(kind).names()


def default_domains(kind: str) -> Tuple[str, str]:
    """``(source, target)`` domain names of ``kind``."""
    SYNTH_DOMAINS.get(kind)
    return DEFAULT_DOMAINS[kind]


# --------------------------------------------------------------------------- random fields
_BASE = 64  # low-frequency fields are drawn on a fixed grid, so a scene looks alike at any size


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def _code(name: str) -> int:
    return zlib.crc32(name.encode())


def _smooth(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth Gaussian noise, unit std, drawn on a 64 px grid (sigma in those px), resized to ``size``."""
    n = ndimage.gaussian_filter(rng.standard_normal((_BASE, _BASE)), sigma, mode="wrap")
    n = (n - n.mean()) / (n.std() + 1e-8)
    if size != _BASE:
        n = ndimage.zoom(n, size / _BASE, order=1, mode="nearest")[:size, :size]
    return n


def _fine(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Fine texture noise at pixel resolution (scaled so it looks alike across sizes), unit std."""
    n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px * size / 128.0)
    return (n - n.mean()) / (n.std() + 1e-8)


def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="xy")  # X (columns), Y (rows), in [-1, 1]


@dataclass
class Lesion:
    """Lesion geometry in normalised coordinates ([-1, 1] across the image)."""

    cx: float
    cy: float
    r0: float
    stretch: float
    angle: float
    harmonics: Tuple[Tuple[int, float, float], ...]

    def rho(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside the lesion, 0 at its centre."""
        dx, dy = X - self.cx, Y - self.cy
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        u = ca * dx + sa * dy
        v = (-sa * dx + ca * dy) * self.stretch
        th = np.arctan2(v, u)
        r = np.full_like(th, 1.0)
        for k, a, ph in self.harmonics:
            r += a * np.cos(k * th + ph)
        return np.hypot(u, v) / (self.r0 * np.maximum(r, 0.5))

    def extent(self) -> float:
        """Upper bound of the lesion's distance from the image centre."""
        rmax = self.r0 * (1 + sum(abs(a) for _, a, _ in self.harmonics)) * max(1.0, 1.0 / self.stretch)
        return float(np.hypot(self.cx, self.cy) + rmax)


def _draw_lesion(rng: np.random.Generator, kind: str) -> Lesion:
    if kind == "polyp":
        ang = rng.uniform(0, 2 * np.pi)
        dist = 0.45 * np.sqrt(rng.uniform())
        r0 = rng.uniform(0.16, 0.40)
        ks = (2, 3, 4, 5)
        harm = tuple((k, float(rng.uniform(0, 0.10) / np.sqrt(k - 1)), float(rng.uniform(0, 2 * np.pi))) for k in ks)
        stretch = rng.uniform(1.0, 1.35)
    else:
        ang = rng.uniform(0, 2 * np.pi)
        dist = 0.22 * np.sqrt(rng.uniform())
        r0 = rng.uniform(0.24, 0.50)
        ks = tuple(range(2, 15))
        harm = tuple((k, float(rng.uniform(0.03, 0.22) / k ** 0.8), float(rng.uniform(0, 2 * np.pi))) for k in ks)
        stretch = rng.uniform(1.0, 1.3)
    les = Lesion(cx=float(dist * np.cos(ang)), cy=float(dist * np.sin(ang)), r0=float(r0), stretch=float(stretch),
                 angle=float(rng.uniform(0, np.pi)), harmonics=harm)
    # every framed domain keeps a field of view of radius >= 1.05: the lesion must fit inside
    lim = 1.02
    if les.extent() > lim:
        s = lim / les.extent()
        les = dataclasses.replace(les, cx=les.cx * s, cy=les.cy * s, r0=les.r0 * s)
    return les


# --------------------------------------------------------------------------- scenes
def _polyp_scene(rng: np.random.Generator, size: int) -> Dict[str, np.ndarray]:
    X, Y = _grid(size)
    les = _draw_lesion(rng, "polyp")
    rho = les.rho(X, Y)
    # lumen: the dark far end of the colon, away from the polyp
    for _ in range(20):
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0.3, 0.85)
        lx, ly = d * np.cos(a), d * np.sin(a)
        if np.hypot(lx - les.cx, ly - les.cy) > les.r0 * 1.3 + 0.35:
            break
    dl = np.hypot(X - lx, Y - ly)
    warp = _smooth(rng, size, 6.0)
    phase = 2 * np.pi * rng.uniform(1.6, 2.8) * dl + 1.2 * warp + rng.uniform(0, 2 * np.pi)
    folds = np.exp(-3.5 * (1 + np.cos(phase)))  # thin dark rings around the lumen
    fold_light = np.sin(phase)  # one side of each fold catches the light
    vessel_field = _smooth(rng, size, 2.2)
    vessels = np.exp(-(vessel_field / 0.12) ** 2) * (0.5 + 0.5 * np.tanh(1.5 * _smooth(rng, size, 8.0)))
    tex = 0.6 * _smooth(rng, size, 3.0) + 0.4 * _fine(rng, size, 0.8)
    pits = _fine(rng, size, 0.7)
    spec_field = _fine(rng, size, 0.9)
    spec_patch = _smooth(rng, size, 5.0)
    # raised polyp: height and its surface normal
    inside = np.clip(1.0 - rho ** 2, 0.0, None)
    h = inside ** 0.6
    gy, gx = np.gradient(h * les.r0 * 1.5, 2.0 / size)
    light = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), 1.0])
    light /= np.linalg.norm(light)
    nz = 1.0 / np.sqrt(1 + gx ** 2 + gy ** 2)
    ndotl = (-gx * light[0] - gy * light[1] + light[2]) * nz
    # blinn-phong highlight (viewer along z)
    half = light + np.array([0, 0, 1.0])
    half /= np.linalg.norm(half)
    ndoth = np.clip((-gx * half[0] - gy * half[1] + half[2]) * nz, 0, 1)
    polyp_spec = (ndoth ** 60) * (rho < 1)
    mucosa_spec = np.clip((spec_field - 2.4) * 2.0, 0, 1) * (spec_patch > 0.3)
    return {"rho": rho, "mask": rho < 1.0, "depth": np.clip(dl / 0.9, 0, 1), "folds": folds, "fold_light": fold_light,
            "vessels": vessels, "tex": tex, "pits": pits, "ndotl": ndotl, "spec": np.clip(polyp_spec + mucosa_spec, 0, 1),
            "X": X, "Y": Y, "lesion": les}


def _hair_map(rng: np.random.Generator, size: int, n_max: int = 14) -> list:
    """Up to ``n_max`` hair strands as separate maps (a domain draws the first k)."""
    strands = []
    t = np.linspace(0, 1, 6 * size)[:, None]
    for _ in range(n_max):
        p0 = rng.uniform(-1.2, 1.2, 2)
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.6, 2.0)
        p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.25, 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        ij = np.round((pts + 1) / 2 * size - 0.5).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < size) & (ij[:, 1] >= 0) & (ij[:, 1] < size)
        m = np.zeros((size, size))
        m[ij[ok, 1], ij[ok, 0]] = 1.0
        width = rng.uniform(0.5, 0.9) * size / 128.0
        m = ndimage.gaussian_filter(m, width)
        strands.append(np.clip(m / (m.max() + 1e-8) * 1.3, 0, 1) * rng.uniform(0.6, 1.0))
    return strands


def _skin_scene(rng: np.random.Generator, size: int) -> Dict[str, np.ndarray]:
    X, Y = _grid(size)
    les = _draw_lesion(rng, "skin")
    rho = les.rho(X, Y)
    tex = 0.5 * _smooth(rng, size, 4.0) + 0.5 * _fine(rng, size, 0.7)
    ery = np.clip(_smooth(rng, size, 7.0), 0, None)  # erythema blotches
    # pigment: darker centre, reticular network, globules
    f = rng.uniform(18, 30)
    warp = _smooth(rng, size, 3.0) * 0.08
    net = np.abs(np.sin(f * (X + warp)) + np.sin(f * (Y - warp))) / 2
    blotch = 0.5 + 0.5 * np.tanh(1.2 * _smooth(rng, size, 4.0))
    core = np.clip(1.0 - rho / rng.uniform(0.6, 0.95), 0, 1) ** 0.7
    glob = np.clip((_fine(rng, size, 0.9) - 1.8) * 2, 0, 1)
    lines = np.exp(-(_smooth(rng, size, 2.0) / 0.15) ** 2) * 0.3  # skin creases
    hairs = _hair_map(rng, size)
    return {"rho": rho, "mask": rho < 1.0, "tex": tex, "ery": ery, "net": net, "blotch": blotch, "core": core,
            "glob": glob, "lines": lines, "hairs": hairs, "X": X, "Y": Y, "lesion": les}


# --------------------------------------------------------------------------- rendering
def _edge(rho: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased lesion coverage: 1 inside, 0 outside, a ~1 px ramp across the boundary."""
    w = 1.5 / size
    return np.clip((1.0 - rho) / w + 0.5, 0.0, 1.0)


def _device(img: np.ndarray, sc: Dict[str, np.ndarray], st: DomainStyle, size: int, rng: np.random.Generator,
            depth: Optional[np.ndarray] = None) -> np.ndarray:
    """Apply the device and acquisition effects of a domain to a float RGB image in [0, 1]."""
    X, Y = sc["X"], sc["Y"]
    r2 = (X ** 2 + Y ** 2) / 2.0
    illum = st.gain * (1.0 - st.vignette * r2 ** 1.2)
    if depth is not None:
        illum = illum * (1.0 - st.depth_dark * (1.0 - depth) ** 2)
    img = img * illum[..., None]
    img = img * np.asarray(st.cast)[None, None, :]
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * st.saturation
    img = np.clip(img, 0, 1) ** st.gamma
    img = 0.5 + (img - 0.5) * st.contrast
    if st.blur > 0:
        s = st.blur * size / 128.0
        img = ndimage.gaussian_filter(img, (s, s, 0))
    if st.frame > 0:
        rr = np.hypot(X, Y)
        fov = np.clip((st.frame - rr) / (2.0 / size) + 0.5, 0, 1)
        img = img * fov[..., None]
    if st.noise > 0:
        img = img + rng.normal(0.0, st.noise, img.shape)
    out = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    if st.jpeg:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(st.jpeg))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def _render_polyp(sc, st: DomainStyle, size: int, rng) -> np.ndarray:
    cov = _edge(sc["rho"], size)[..., None]
    bg = np.asarray(st.background) * (1 + st.texture * sc["tex"])[..., None]
    bg = bg * (1 - st.vessel_strength * sc["vessels"])[..., None] + \
        np.asarray(st.vessel) * (st.vessel_strength * sc["vessels"])[..., None] * 0.5
    bg = bg * (1 - 0.38 * sc["folds"] + 0.06 * sc["fold_light"])[..., None]
    les = np.asarray(st.lesion) * (1 + 0.6 * st.texture * sc["pits"])[..., None]
    shade = 1.0 - st.lesion_shading + st.lesion_shading * np.clip(sc["ndotl"], 0, 1)
    les = les * shade[..., None]
    # a darker rim where the polyp meets the mucosa (its base casts a shadow)
    rim = np.exp(-((sc["rho"] - 1.0) / 0.12) ** 2) * 0.25 * st.lesion_shading
    img = bg * (1 - cov) + les * cov
    img = img * (1 - rim)[..., None]
    img = img + st.specular * sc["spec"][..., None]
    return _device(img, sc, st, size, rng, depth=sc["depth"])


def _render_skin(sc, st: DomainStyle, size: int, rng) -> np.ndarray:
    cov = _edge(sc["rho"], size)[..., None]
    bg = np.asarray(st.background) * (1 + st.texture * sc["tex"] - 0.3 * st.texture * sc["lines"])[..., None]
    e = (st.vessel_strength * sc["ery"])[..., None]
    bg = bg * (1 - 0.5 * e) + np.asarray(st.vessel) * 0.5 * e
    pig = np.asarray(st.lesion) + (np.asarray(st.lesion_core) - np.asarray(st.lesion)) * \
        np.clip(sc["core"] * 0.8 + 0.35 * sc["blotch"] - 0.1, 0, 1)[..., None]
    pig = pig * (1 - 0.18 * sc["net"] - 0.25 * sc["glob"])[..., None]
    # the pigment fades over a few pixels at the irregular border, but stays inside the mask
    fade = np.clip((1.0 - sc["rho"]) / 0.08, 0, 1) ** 0.5
    a = cov * (0.55 + 0.45 * fade[..., None])
    img = bg * (1 - a) + pig * a
    n_h = int(round(st.hair * len(sc["hairs"])))
    for hm in sc["hairs"][:n_h]:
        img = img * (1 - 0.85 * hm[..., None]) + 0.08 * hm[..., None]
    img = img + st.specular * 0.3 * np.clip(_fine(rng, size, 0.6) - 2.2, 0, 1)[..., None]
    return _device(img, sc, st, size, rng)


_SCENE_CODE = {"polyp": 1, "skin": 2}


def make_sample(kind: str = "polyp", domain: str = "", seed: int = 0, index: int = 0,
                size: int = 128) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic sample: ``(image uint8 (size,size,3), mask bool (size,size))``.

    The scene (and so the mask) depends on ``(kind, seed, index)`` only; ``domain`` changes
    the appearance. ``domain=""`` picks the kind's default source domain.
    """
    st = get_domain(kind, domain or default_domains(kind)[0])
    if size < 16:
        raise StylsegError(f"synthetic size {size} is too small; use at least 16 px")
    scene_rng = _rng(seed, index, _SCENE_CODE[kind])
    sc = _polyp_scene(scene_rng, size) if kind == "polyp" else _skin_scene(scene_rng, size)
    dev_rng = _rng(seed, index, _SCENE_CODE[kind], _code(domain or "default"))
    img = _render_polyp(sc, st, size, dev_rng) if kind == "polyp" else _render_skin(sc, st, size, dev_rng)
    return img, sc["mask"].copy()


def domain_params(kind: str, domain: str, n: int, size: int, seed: int) -> Dict:
    import json

    d = {"kind": kind, "domain": domain, "n": int(n), "size": int(size), "seed": int(seed),
         "generator_version": GENERATOR_VERSION, "style": dataclasses.asdict(get_domain(kind, domain))}
    return json.loads(json.dumps(d))  # as it reads back from domain.json (tuples -> lists)


def generate_domain(out: os.PathLike, kind: str = "polyp", domain: str = "", n: int = 64, size: int = 128,
                    seed: int = 0, progress: bool = True) -> Path:
    """Write ``n`` samples of ``kind``/``domain`` as ``out/images/NNNN.png`` + ``out/masks/NNNN.png``
    and ``out/domain.json`` (the parameters). Returns ``out``.

    Resumable and idempotent: existing files of a folder made with the same parameters are
    kept; a folder made with other parameters raises :class:`StylsegError`.
    """
    from tqdm.auto import tqdm

    from .io import write_image, write_mask

    SYNTH_DOMAINS.get(kind)
    domain = domain or default_domains(kind)[0]
    get_domain(kind, domain)
    if n < 1:
        raise StylsegError(f"--n must be at least 1, got {n}")
    out = Path(out)
    params = domain_params(kind, domain, n, size, seed)
    meta = out / "domain.json"
    if meta.is_file():
        old = read_json(meta)
        if old != params:
            raise StylsegError(f"{meta}: this folder holds synthetic data made with other parameters "
                               f"({old.get('kind')}/{old.get('domain')}, n={old.get('n')}, size={old.get('size')}, "
                               f"seed={old.get('seed')}); choose another --out or delete the folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    todo = [i for i in range(n) if not ((out / "images" / f"{i:0{width}d}.png").is_file()
                                        and (out / "masks" / f"{i:0{width}d}.png").is_file())]
    for i in tqdm(todo, desc=f"synth {kind}/{domain}", disable=not progress or not todo, leave=False):
        img, mask = make_sample(kind, domain, seed, i, size)
        write_image(out / "images" / f"{i:0{width}d}.png", img)
        write_mask(out / "masks" / f"{i:0{width}d}.png", mask)
    write_json(meta, params)
    return out
