"""The benchmarks' result files: a rewritten table keeps the notes written by hand under it."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "write_table.py"


def load_write_table():
    spec = importlib.util.spec_from_file_location("write_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rewritten_table_keeps_the_notes_below_the_notes_line(tmp_path):
    wt = load_write_table()
    out = wt.write_table("benchmarks/some_budget.py", "| a |\n|---|\n| 1 |\n", results=tmp_path)
    assert out.read_text() == "# benchmarks/some_budget.py\n\n| a |\n|---|\n| 1 |\n"
    out.write_text(out.read_text() + "\n" + wt.NOTES + "\nRow 1 was run by hand with --seed 3.\n")
    wt.write_table("benchmarks/some_budget.py", "| a |\n|---|\n| 2 |\n", results=tmp_path)
    text = out.read_text()
    assert text.startswith("# benchmarks/some_budget.py\n\n| a |\n|---|\n| 2 |\n") and "| 1 |" not in text
    assert text.endswith(wt.NOTES + "\nRow 1 was run by hand with --seed 3.\n")


def test_rows_are_kept_beside_the_table_at_full_precision(tmp_path):
    wt = load_write_table()
    assert wt.read_rows("benchmarks/some_budget.py", results=tmp_path) == []
    rows = [{"dataset": "mnist-sample", "fid_heldout_floor": 11.0412345, "steps": 3000}]
    path = wt.write_rows("benchmarks/some_budget.py", rows, results=tmp_path)
    assert path == tmp_path / "some_budget.rows.json"
    assert wt.read_rows("benchmarks/some_budget.py", results=tmp_path) == rows
