"""The GPU check's --smoke mode on the CPU: every measurement of the table runs and is written, so that the code a
GPU machine runs is exercised here (the GPU figures themselves come from `make gpu-check` on a GPU)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_mode_measures_every_row(tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--smoke", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "gpu_check.json").read_text())
    stages = [row["stage"] for row in res["rows"]]
    assert stages == ["DiffAE training", "one-shot fine-tuning", "stylizing a dataset", "segmentation (unet)"]
    for row in res["rows"]:
        assert row["status"] == "ok" and isinstance(row["value"], float) and row["value"] > 0, row
    assert res["environment"]["torch"] and res["profile"] == "smoke"
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("GPU check") and "images/s" in md and "s/iteration" in md and "s/epoch" in md


def test_gpu_check_refuses_to_run_the_gpu_mode_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is here")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "--smoke" in r.stderr
