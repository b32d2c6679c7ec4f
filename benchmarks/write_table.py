"""Where every benchmark leaves its table: benchmarks/results/<script name>.md.

What is written by hand under the table (how a row was measured, runs made outside the script)
goes below the NOTES line, and rewriting the table keeps it."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "results"
NOTES = "<!-- notes written by hand: the benchmark keeps what follows when it rewrites the table -->"


def write_table(script: str, table: str, results: Path = RESULTS) -> Path:
    """Write `table` under a heading naming the benchmark `script` (pass __file__), and keep the
    notes below the NOTES line of the file it replaces."""
    name = Path(script).stem
    out = results / f"{name}.md"
    out.parent.mkdir(exist_ok=True)
    old = out.read_text() if out.is_file() else ""
    notes = "\n" + old[old.index(NOTES):] if NOTES in old else ""
    out.write_text(f"# benchmarks/{name}.py\n\n" + table.rstrip("\n") + "\n" + notes)
    return out
