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
