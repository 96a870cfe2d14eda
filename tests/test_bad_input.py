"""docs/bad-input.md stays true: the table regenerated from real runs of its commands matches the committed file
(tools/bad_input_table.py; tiny inputs, no training)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("bad_input_table", ROOT / "tools" / "bad_input_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_bad_input_table_matches_the_commands(tmp_path, monkeypatch):
    mod = _module()
    monkeypatch.delenv("STYLSEG_WEIGHTS_DIR", raising=False)
    text = mod.build_table(tmp_path / "w")
    committed = (ROOT / "docs" / "bad-input.md").read_text()
    assert text == committed, ("docs/bad-input.md is out of date with what the commands print: run "
                               "`python tools/bad_input_table.py --write` and review the diff")


def test_every_row_is_a_clean_failure_or_a_stated_outcome(tmp_path):
    """No row shows a traceback; every error row (exit 2) names the stage; the table covers each issue item."""
    mod = _module()
    (tmp_path / "w").mkdir()
    text = (ROOT / "docs" / "bad-input.md").read_text()
    assert "Traceback" not in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "`stylseg" in ln]
    assert len(rows) == len(mod.CASES)
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split(" | ")]
        if cells[2] == "2":
            assert "stylseg " in cells[3] and ": error: " in cells[3]
