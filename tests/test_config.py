import dataclasses
import json

import pytest

from stylseg.config import PROFILES, RunConfig, get_profile, parse_set_args
from stylseg.utils import StylsegError


def test_profiles_follow_design_table():
    s, c, p = (get_profile(n) for n in ("smoke", "cpu", "paper"))
    assert PROFILES == ("smoke", "workshop", "cpu", "paper")
    assert (s.data.diffusion_size, s.data.seg_size) == (32, 64)
    assert (c.data.diffusion_size, c.data.seg_size) == (64, 128)
    assert (p.data.diffusion_size, p.data.seg_size) == (256, 256)
    assert (s.ddim.t0, c.ddim.t0, p.ddim.t0) == (0.125, 0.25, 0.5)
    assert (p.ddim.apply_invert_steps, p.ddim.apply_gen_steps) == (50, 25)
    assert p.stylize.lr_unet == 5e-6 and p.stylize.iterations == 200 and p.stylize.batch_size == 8
    # DiffAE-256 configuration in the paper profile
    assert p.diffae.base_channels == 128 and p.diffae.channel_mult == (1, 1, 2, 2, 4, 4)
    assert p.diffae.z_dim == 512 and p.diffae.attn_resolutions == (16,)
    # paper segmentation settings (docs/method.md section 5)
    assert p.seg.lr_for("unet") == 5e-5 and p.seg.lr_for("unetpp") == 8e-5 and p.seg.lr_for("pranet") == 1e-4
    assert p.seg.epochs_for("pranet") == 40 and p.seg.epochs_for("unet") == 30
    assert p.seg.batch_size == 12 and p.seg.image_size == 256


def test_workshop_profile_sits_between_smoke_and_cpu():
    """The workshop profile: the cpu profile's recipe (v-prediction, flattened code, the gates stylizer) at sizes
    and step budgets between smoke and cpu, and a fixed step budget (no clock) so that two runs agree."""
    s, w, c = (get_profile(n) for n in ("smoke", "workshop", "cpu"))
    assert w.diffae.max_seconds == 0.0 and w.diffae.train_steps > s.diffae.train_steps
    assert (w.diffae.prediction, w.diffae.enc_pool, w.diffae.loss_weighting) == ("v", "flatten", "v")
    assert w.stylize.preset == "gates" and s.stylize.iterations < w.stylize.iterations <= c.stylize.iterations
    assert s.data.n_per_domain <= w.data.n_per_domain <= c.data.n_per_domain
    assert s.data.seg_size <= w.data.seg_size <= c.data.seg_size
    assert w.seg.seeds == 1 and {"direct", "st", "recon", "oracle"} <= set(w.eval.arms)


def test_json_round_trip(tmp_path):
    for name in PROFILES:
        cfg = get_profile(name).override(**{"seg.archs": "unet,pranet", "seed": 3})
        cfg.save(tmp_path / "c.json")
        back = RunConfig.load(tmp_path / "c.json")
        assert back == cfg
        assert json.loads((tmp_path / "c.json").read_text())["seg"]["archs"] == ["unet", "pranet"]


def test_override_converts_strings_and_keeps_rest():
    cfg = get_profile("smoke")
    new = cfg.override(**{"seg.epochs": "7", "ddim.t0": "0.3", "seg.color_jitter": "true", "device": "cpu"})
    assert new.seg.epochs == 7 and new.ddim.t0 == 0.3 and new.seg.color_jitter is True and new.device == "cpu"
    assert new.diffae == cfg.diffae and cfg.seg.epochs == get_profile("smoke").seg.epochs != 7  # original untouched
    assert cfg.override(**{"seg.epochs": None}) == cfg


@pytest.mark.parametrize("bad,msg", [
    ({"seg.nope": 1}, "valid fields: "),
    ({"nostage.x": 1}, "valid stages: data"),
    ({"seg.epochs": "three"}, "expected an integer"),
    ({"seg.epochs": "2.5"}, "expected an integer"),
    ({"ddim.t0": "abc"}, "expected a number"),
    ({"seg.color_jitter": "maybe"}, "true/false"),
    ({"bogus": 1}, "unknown config field"),
])
def test_override_errors_list_valid_names(bad, msg):
    with pytest.raises(StylsegError, match=msg):
        get_profile("smoke").override(**bad)


def test_unknown_profile_lists_valid():
    with pytest.raises(StylsegError, match="valid profiles: smoke, workshop, cpu, paper"):
        get_profile("fast")


def test_from_dict_rejects_unknown_fields():
    d = get_profile("smoke").to_dict()
    d["seg"]["epochz"] = 3
    with pytest.raises(StylsegError, match="epochz"):
        RunConfig.from_dict(d)


def test_parse_set_args():
    assert parse_set_args(["seg.epochs=5", "ddim.t0 = 0.25"]) == {"seg.epochs": "5", "ddim.t0": "0.25"}
    with pytest.raises(StylsegError, match="KEY=VALUE"):
        parse_set_args(["seg.epochs"])


def test_names_are_checked_when_a_config_is_made():
    """A misspelt name (--set stylize.sensor=mtch) is refused at once, from --set and from a config file."""
    cfg = get_profile("smoke")
    with pytest.raises(StylsegError, match=r"stylize.sensor='mtch' is not one of off, match"):
        cfg.override(**{"stylize.sensor": "mtch"})
    assert cfg.override(**{"stylize.sensor": "match"}).stylize.sensor == "match"
    d = cfg.to_dict()
    d["diffae"]["prediction"] = "x0"
    with pytest.raises(StylsegError, match=r"diffae.prediction='x0' is not one of eps, v"):
        RunConfig.from_dict(d)
    for name in PROFILES:  # every profile's own values are valid
        RunConfig.from_dict(get_profile(name).to_dict())


def test_step_counts_and_t0_out_of_range_are_refused_at_once():
    """--set ddim.apply_gen_steps=0 (or t0 outside (0, 1]) stops before any stage runs, from --set and from a file."""
    cfg = get_profile("smoke")
    with pytest.raises(StylsegError, match=r"ddim.apply_gen_steps=0 is out of range: expected an integer >= 1"):
        cfg.override(**{"ddim.apply_gen_steps": "0"})
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(StylsegError, match=r"ddim.t0=.* is out of range: expected a fraction of T in \(0, 1\]"):
            cfg.override(**{"ddim.t0": bad})
    assert cfg.override(**{"ddim.apply_gen_steps": "1", "ddim.t0": "1"}).ddim.apply_gen_steps == 1
    with pytest.raises(StylsegError, match=r"stylize.style_pair_t0=-0.5 is out of range"):
        cfg.override(**{"stylize.style_pair_t0": "-0.5"})
    assert cfg.override(**{"stylize.style_pair_t0": "0"}).stylize.style_pair_t0 == 0  # 0 = ddim.t0
    d = cfg.to_dict()
    d["ddim"]["finetune_invert_steps"] = -3
    with pytest.raises(StylsegError, match=r"ddim.finetune_invert_steps=-3 is out of range"):
        RunConfig.from_dict(d)


def test_config_choices_agree_with_the_modules_that_use_them():
    from stylseg.config import CHOICES
    from stylseg.data.synth import KINDS
    from stylseg.diffusion.nets import ENC_POOLS, PREDICTIONS
    from stylseg.diffusion.train import LOSS_WEIGHTINGS
    from stylseg.metrics import PROTOCOLS
    from stylseg.stylize.apply import SENSOR, UPSAMPLE
    from stylseg.config import PRESETS
    from stylseg.stylize.finetune import SPN_ROLES, STRUCTURE_REGIONS
    from stylseg.stylize.style_pair import STYLE_PAIR_PICKS
    from stylseg.stylize.losses import LOSS_SETS
    from stylseg.stylize.perceptual import RECON_PERCEPTUAL
    from stylseg.stylize.spn import SPN_FORMS, SPN_REGIONS
    from stylseg.utils import PRECISIONS

    used = {"data.kind": KINDS, "diffae.enc_pool": ENC_POOLS, "diffae.prediction": PREDICTIONS,
            "diffae.loss_weighting": LOSS_WEIGHTINGS, "eval.protocol": PROTOCOLS, "stylize.sensor": SENSOR,
            "stylize.upsample": UPSAMPLE, "stylize.spn_role": SPN_ROLES, "stylize.loss_set": LOSS_SETS,
            "stylize.structure_region": STRUCTURE_REGIONS, "stylize.style_pair_pick": STYLE_PAIR_PICKS,
            "stylize.spn_form": SPN_FORMS, "stylize.preset": tuple(PRESETS),
            "stylize.recon_perceptual": RECON_PERCEPTUAL,
            "precision": PRECISIONS}
    assert {k: set(v) for k, v in CHOICES.items()} == {k: set(v) for k, v in used.items()}
    assert set(SPN_REGIONS) == set(STRUCTURE_REGIONS)  # the SPN's gate follows stylize.structure_region


# --------------------------------------------------------------------------- presets
#: the settings the gate benchmark (commit c33b0c3) measured as meeting the style and lesion gates on the cpu profile
#: in 4 of 4 fine-tuning seeds (docs/results.md), as --set flags on top of the profile's OSASIS defaults
MEASURED_GATES_RECIPE = [
    "stylize.style_pair_t0=0.625", "stylize.spn_lambda=1.0", "stylize.w_structure=0.25",
    "stylize.structure_region=lesion", "stylize.spn_role=guard", "stylize.lr_spn=1e-5", "ddim.apply_gen_steps=5",
    "stylize.style_pair_pick=domain", "stylize.style_pair_tries=16", "stylize.upsample=detail_lesion",
    "stylize.sensor=match"]


def test_stylize_config_has_at_most_25_fields_and_presets_hold_only_real_fields():
    from dataclasses import fields

    from stylseg.config import PRESETS, StylizeConfig

    names = {f.name for f in fields(StylizeConfig)}
    # 25: the 24 of the presets' design plus recon_perceptual, which (like embedder) says which published weights
    # the run uses, not a method switch
    assert len(names) <= 25 and "preset" in names
    for name, bundle in PRESETS.items():
        for key, value in bundle.items():
            stage, field = key.split(".", 1) if "." in key else ("stylize", key)
            if stage == "stylize":
                assert field in names, (name, key)
                get_profile("smoke").override(**{f"stylize.{field}": value})  # a valid value of the field
            else:
                assert (key, value in ("profile", "finetune")) == ("ddim.apply_gen_steps", True)


def test_cpu_default_preset_is_exactly_the_measured_gates_recipe():
    """The cpu profile's default is the preset 'gates', which expands to the settings the gate benchmark measured:
    the old cpu defaults (OSASIS's) with the recipe's --set flags give the same stylizer config and step counts."""
    from stylseg.config import PRESETS, parse_set_args

    cpu = get_profile("cpu")
    assert cpu.stylize.preset == "gates"
    old_defaults = get_profile("cpu").override(**{"stylize.preset": "osasis"})
    measured = old_defaults.override(**parse_set_args(MEASURED_GATES_RECIPE))
    assert dataclasses.replace(measured.stylize, preset="gates") == cpu.stylize
    assert measured.ddim == cpu.ddim
    # and by name, from any profile: the preset is a name, recorded, with nothing changed
    by_name = old_defaults.override(**{"stylize.preset": "gates"})
    assert by_name.stylize == cpu.stylize and by_name.ddim == cpu.ddim
    assert set(PRESETS) >= {"osasis", "paper", "gates"}


def test_osasis_preset_is_the_old_default_and_paper_profile_keeps_published_settings():
    from stylseg.config import StylizeConfig

    cpu_osasis = get_profile("cpu").override(**{"stylize.preset": "osasis"})
    assert cpu_osasis.ddim.apply_gen_steps == 10  # the profile's own count comes back
    s = cpu_osasis.stylize
    assert (s.loss_set, s.w_structure, s.spn_role, s.structure_region, s.spn_lambda, s.lr_spn, s.style_pair_pick,
            s.style_pair_tries, s.style_pair_t0, s.upsample, s.sensor) == (
        "osasis", 0.0, "joint", "image", 0.1, 1e-4, "fidelity", 4, 0.0, "detail", "off")
    paper = get_profile("paper")
    assert paper.stylize.preset == "osasis" and paper.stylize.embedder == "clip" and paper.stylize.lr_unet == 5e-6
    assert paper.ddim.apply_gen_steps == 25
    p = get_profile("smoke").override(**{"stylize.preset": "paper"}).stylize
    assert (p.loss_set, p.w_cycle, p.w_structure) == ("paper", 1.0, 1.0)
    assert StylizeConfig().preset == "osasis"


def test_preset_then_single_fields_and_unknown_preset_lists_the_valid_ones():
    from stylseg.config import preset_changes

    cfg = get_profile("smoke").override(**{"stylize.w_structure": "0.1", "stylize.preset": "gates"})
    assert cfg.stylize.preset == "gates" and cfg.stylize.w_structure == 0.1  # the preset first, then the field
    assert preset_changes(cfg) == {"stylize.w_structure": 0.1}
    assert preset_changes(get_profile("cpu")) == {}
    with pytest.raises(StylsegError, match=r"stylize.preset='gate' is not one of osasis, paper, gates"):
        get_profile("smoke").override(**{"stylize.preset": "gate"})


def test_config_of_an_earlier_kit_names_the_fix():
    d = get_profile("smoke").to_dict()
    d["stylize"]["ema_decay"] = 0.0
    with pytest.raises(StylsegError, match=r"unknown field\(s\) ema_decay.*earlier stylseg.*stylize.preset"):
        RunConfig.from_dict(d)


def test_notebook_preset_parameter_comes_before_set(tmp_path):
    """Notebook 04's PRESET goes in first, so that SET changes single fields of the preset, not the other way."""
    from stylseg import nbtools

    ns = {"PROFILE": "smoke", "SEED": 0, "DEVICE": "cpu", "DATA_DIR": "", "RUN_DIR": str(tmp_path / "run"),
          "SET": "stylize.w_structure=0.14", "PRESET": "gates"}
    cfg, _, _ = nbtools.setup(ns, overrides={"stylize.preset": "gates"}, quiet=True, PRESET=str)
    assert cfg.stylize.preset == "gates" and cfg.stylize.w_structure == 0.14 and cfg.stylize.spn_role == "guard"
    assert RunConfig.load(tmp_path / "run" / "config.json").stylize == cfg.stylize  # kept for the later notebooks


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_integer_fields_refuse_non_finite_values_with_the_rule(value):
    with pytest.raises(StylsegError, match=rf"seg.epochs: expected an integer >= 1, got '{value}'"):
        get_profile("smoke").override(**{"seg.epochs": value})


@pytest.mark.parametrize("rates,size", [("0", 64), ("0.2,1", 64), ("nan", 64), ("0.4,1", 32)])
def test_multiscale_rates_that_give_no_size_are_refused_up_front(rates, size):
    with pytest.raises(StylsegError, match=r"seg.multiscale=.* is out of range: rate .* at least 32 px"):
        get_profile("smoke").override(**{"seg.image_size": size, "seg.multiscale": rates})
    assert get_profile("smoke").override(**{"seg.image_size": 64, "seg.multiscale": "0.75,1,1.25"}).seg.multiscale \
        == (0.75, 1.0, 1.25)


@pytest.mark.parametrize("text,msg", [("[1, 2]", r"config: expected a JSON object of RunConfig fields, got list"),
                                      ('{"profile": "smoke", "seg": 5, "diffae": {}}',
                                       r"config.seg: expected a JSON object of SegConfig fields, got int")])
def test_a_run_config_of_the_wrong_shape_is_named(tmp_path, text, msg):
    p = tmp_path / "config.json"
    p.write_text(text)
    with pytest.raises(StylsegError, match=rf"{p}: {msg}.*delete it"):
        RunConfig.load(p)


def test_eval_presets_names_are_checked_one_by_one():
    from stylseg.config import get_profile

    cfg = get_profile("smoke").override(**{"eval.presets": "osasis,gates"})
    assert cfg.eval.presets == ("osasis", "gates") and cfg.stylize.preset == "osasis"
    with pytest.raises(StylsegError, match=r"'gatez' is not one of osasis, paper, gates.*--presets"):
        get_profile("smoke").override(**{"eval.presets": "osasis,gatez"})
    with pytest.raises(StylsegError, match="given twice"):
        get_profile("smoke").override(**{"eval.presets": "gates,gates"})
