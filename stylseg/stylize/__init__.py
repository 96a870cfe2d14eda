"""One-shot structure-aware stylization (docs/method.md sections 1, 3, 4, 7).

Public API (imported lazily, so ``stylseg stylize --help`` stays quick)::

    SPN, spn_shift, build_spn                      # stylseg.stylize.spn
    WeightFreeEmbedder, ClipEmbedder, make_embedder, register_tiny_clip, SUBSTITUTE   # .embedders
    StyleLoss, structure_map, directional_loss, ms_ssim   # .losses
    make_style_pair                                # .style_pair
    finetune, load_history                         # .finetune
    Stylizer, StylizerRecord                       # .stylizer
    apply_stylizer, upsample_result                # .apply
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "SPN": "spn", "spn_shift": "spn", "build_spn": "spn",
    "WeightFreeEmbedder": "embedders", "ClipEmbedder": "embedders", "make_embedder": "embedders",
    "register_tiny_clip": "embedders", "SUBSTITUTE": "embedders", "EMBEDDERS": "embedders",
    "StyleLoss": "losses", "structure_map": "losses", "directional_loss": "losses", "ms_ssim": "losses",
    "make_style_pair": "style_pair", "finetune": "finetune", "load_history": "finetune",
    "Stylizer": "stylizer", "StylizerRecord": "stylizer",
    "apply_stylizer": "apply", "upsample_result": "apply",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
