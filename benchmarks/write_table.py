"""Where every benchmark leaves its table: benchmarks/results/<script name>.md.

What is written by hand under the table (how a row was measured, runs made outside the script)
goes below the NOTES line, and rewriting the table keeps it. A benchmark that reruns only some of
its rows keeps the others in benchmarks/results/<script name>.rows.json, at full precision and in
the repository, so that they survive the runs folder and are not rebuilt from the table's rounded
figures."""

from __future__ import annotations

import json
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


def rows_file(script: str, results: Path = RESULTS) -> Path:
    return results / f"{Path(script).stem}.rows.json"


def read_rows(script: str, results: Path = RESULTS) -> list[dict]:
    """The rows the benchmark `script` last wrote (none yet: [])."""
    path = rows_file(script, results)
    return json.loads(path.read_text()) if path.is_file() else []


def write_rows(script: str, rows: list[dict], results: Path = RESULTS) -> Path:
    """Keep `rows` (call after each row: a crash later keeps what was measured)."""
    path = rows_file(script, results)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return path
