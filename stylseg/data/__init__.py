"""Data: paired image/mask folders, synthetic domains, known public layouts, checks and splits.

Public API (imported lazily, so ``stylseg data check`` does not import torch)::

    PairedDataset, load_pairs                    # stylseg.data.dataset
    check_folder, CheckReport                    # stylseg.data.check
    validate_paired, scan_paired                 # stylseg.data.validate (the one validation path)
    SYNTH_DOMAINS, generate_domain, make_sample  # stylseg.data.synth
    LAYOUTS, open_layout, materialise            # stylseg.data.layouts
    prepare_run_data                             # stylseg.data.split
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PairedDataset": "dataset", "load_pairs": "dataset", "IMAGENET_MEAN": "dataset", "IMAGENET_STD": "dataset",
    "check_folder": "check", "CheckReport": "check", "validate_paired": "validate", "scan_paired": "validate",
    "SYNTH_DOMAINS": "synth", "DEFAULT_DOMAINS": "synth", "generate_domain": "synth", "make_sample": "synth",
    "get_domain": "synth", "default_domains": "synth", "DomainStyle": "synth",
    "LAYOUTS": "layouts", "open_layout": "layouts", "materialise": "layouts",
    "prepare_run_data": "split", "FETCH": "fetch", "fetch_dataset": "fetch",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
