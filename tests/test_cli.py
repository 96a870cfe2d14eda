import subprocess
import sys

import pytest

from stylseg.cli import STAGES, main


def test_top_level_help_lists_every_contract_stage(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "diffae", "stylize", "seg", "evaluate", "report", "reproduce", "weights"):
        assert stage in out


def test_unknown_stage_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["paint"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage):
    r = subprocess.run([sys.executable, "-m", "stylseg", stage, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: stylseg" in r.stdout


def test_reproduce_rejects_unknown_profile(capsys, tmp_path):
    assert main(["reproduce", "--profile", "turbo", "--out", str(tmp_path / "r")]) == 2
    assert "valid profiles: smoke, workshop, cpu, paper" in capsys.readouterr().err
