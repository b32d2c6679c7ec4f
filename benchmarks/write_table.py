"""Where every benchmark leaves its table: benchmarks/results/<script name>.md."""

from __future__ import annotations

from pathlib import Path


def write_table(script: str, table: str) -> Path:
    """Write `table` under a heading naming the benchmark `script` (pass __file__)."""
    name = Path(script).stem
    out = Path(__file__).parent / "results" / f"{name}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"# benchmarks/{name}.py\n\n" + table)
    return out
