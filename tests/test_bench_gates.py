"""The gate benchmark's verdicts and its summary over fine-tuning seeds (benchmarks/bench_stylize_gates.py), on
score rows written by hand: whether a setting meets the gates in every fine-tuning."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_stylize_gates", ROOT / "benchmarks" / "bench_stylize_gates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(lesion, p, fd=0.25, oracle=0.98, ssim=0.5):
    return {"structure_ssim_lesion": lesion, "style_p_target_output": p, "style_fd_ratio": fd,
            "oracle_dice_ratio": oracle, "structure_ssim": ssim}


def test_gate_verdicts(bench):
    assert bench.gate_verdicts(row(0.834, 0.726)) == (True, False, True)
    assert bench.gate_verdicts(row(0.796, 0.706)) == (True, False, False)  # misses the lesion gate by 0.004
    assert bench.gate_verdicts(row(0.9, 0.9, fd=0.6)) == (False, False, True)  # style needs the FD ratio too
    assert bench.gate_verdicts(row(0.9, 0.9, oracle=0.85)) == (True, False, False)
    assert bench.gate_verdicts(row(0.9, 0.9, ssim=0.81)) == (True, True, True)


def test_seed_summary_counts_the_fine_tunings_that_meet_both(bench):
    scores = {0: {"st_osasis_sensor": row(0.834, 0.726), "st_nospn_osasis_sensor": row(0.80, 0.76, ssim=0.48)},
              1: {"st_osasis_sensor": row(0.796, 0.706), "st_nospn_osasis_sensor": row(0.79, 0.70, ssim=0.5)},
              2: None}
    out = bench.seed_summary(scores, "st_osasis_sensor")
    assert "seed 0: 0.834 / 0.980 / 0.250 / 0.726   style PASS, lesion PASS; SPN line met" in out
    assert "seed 1: 0.796" in out and "lesion fail; SPN line not met" in out  # 0.006 more, but not on the whole image
    assert "seed 2: not scored yet" in out
    assert "together in 1 of 2 fine-tunings (style 2, lesion 1, SPN line 1)" in out and "every seed" not in out
    both = {k: {"st_osasis_sensor": row(0.81, 0.71)} for k in (0, 1, 2)}
    assert "together in 3 of 3 fine-tunings (style 3, lesion 3, SPN line 0): every seed passes" in \
        bench.seed_summary(both, "st_osasis_sensor")


def test_summary_only_reads_each_seeds_folder(bench, tmp_path, capsys):
    sets = ["stylize.w_structure=0.125", "stylize.style_pair_pick=domain"]
    for seed, r in ((0, row(0.83, 0.72)), (1, row(0.81, 0.75)), (2, row(0.85, 0.60))):
        d = tmp_path / "bench_stylize" / bench._tag(sets, None if seed == 0 else seed)  # seed 0: the run's own
        d.mkdir(parents=True)
        (d / "scores.json").write_text(json.dumps({"st_osasis_sensor": r}))
    argv = ["--profile", "smoke", "--run", str(tmp_path), "--presets", "osasis", "--finetune-seeds", "0", "1", "2",
            "--summary-only"] + [x for s in sets for x in ("--set", s)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "summary over fine-tuning seeds 0, 1, 2" in out and "stylize.style_pair_pick=domain" in out
    assert "together in 2 of 3 fine-tunings (style 2, lesion 3, SPN line 0)" in out
    assert "=====" not in out  # nothing was run


def test_summary_reads_the_own_seed_run_with_finetune_seed_spelled_out(bench, tmp_path, capsys):
    """``--finetune-seed 0`` (the profile's own seed) writes ``..._ftseed0``; the summary finds it there too."""
    sets = ["stylize.w_structure=0.14"]
    for seed, r in ((0, row(0.81, 0.83)), (1, row(0.78, 0.85))):
        d = tmp_path / "bench_stylize" / bench._tag(sets, seed)
        d.mkdir(parents=True)
        (d / "scores.json").write_text(json.dumps({"st_osasis_sensor": r}))
    argv = ["--profile", "smoke", "--run", str(tmp_path), "--presets", "osasis", "--finetune-seeds", "0", "1",
            "--summary-only", "--set", sets[0]]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "not scored yet" not in out
    assert "together in 1 of 2 fine-tunings (style 2, lesion 1" in out


def test_seed_list_is_removed_from_the_arguments_of_each_run(bench):
    argv = ["--profile", "cpu", "--finetune-seeds", "0", "1", "--set", "a.b=1", "--summary-only", "--no-baselines"]
    assert bench._without_seed_list(argv) == ["--profile", "cpu", "--set", "a.b=1", "--no-baselines"]


def test_called_by_the_preset_name_the_benchmark_fine_tunes_the_measured_recipe(bench):
    """``--presets gates`` on the cpu profile fine-tunes and applies with exactly the settings that were measured as
    ``--loss-sets osasis`` plus the recipe's --set flags (tests/test_config.py holds them), and --sets still change
    single fields of the preset."""
    from test_config import MEASURED_GATES_RECIPE

    from stylseg.config import get_profile, parse_set_args

    got = bench.preset_config("cpu", "gates", {})
    measured = get_profile("cpu").override(**{"stylize.preset": "osasis", "stylize.loss_set": "osasis",
                                              **parse_set_args(MEASURED_GATES_RECIPE)})
    assert got.ddim == measured.ddim and got.stylize == dataclasses.replace(measured.stylize, preset="gates")
    assert bench.preset_config("cpu", "gates", {"stylize.w_structure": "0.14"}).stylize.w_structure == 0.14
    assert bench.preset_config("cpu", "osasis", {}).stylize.w_structure == 0.0
