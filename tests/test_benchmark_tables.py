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


def test_the_latent_benchmarks_longer_budgets_pass_flags_that_genlab_train_takes(monkeypatch):
    """A flag in latent_budget.LONGER that `genlab train` does not know would only show in a
    30-minute run; here each 30-minute flag set is parsed onto its recipe as the benchmark runs it."""
    from genlab.cli import train_parser
    from genlab.config import apply_overrides, load_config

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("latent_budget", SCRIPT.parent / "latent_budget.py")
    lb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lb)
    root = SCRIPT.parents[1]
    for recipes in lb.RECIPES.values():
        for _, config in recipes:
            flags = lb.longer_budget(config, 30)
            assert lb.longer_budget(config, 5) == ()
            base = load_config(root / config)
            args = train_parser(base.model.name).parse_args(["--config", config, *flags])
            resolved = apply_overrides(base, {k: v for k, v in vars(args).items() if "." in k})
            if config in lb.LONGER:
                assert resolved != base
    digits = lb.longer_budget("configs/latent-diffusion-mnist-sample.yaml", 30)
    assert digits == ("--first-stage-steps", "5400", "--dropout", "0.1")
