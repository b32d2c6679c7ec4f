"""How often one `genlab eval RUN` reads each split of its dataset from disk, with its seconds and
peak memory (the issue "one pass of data through each command").

    .venv/bin/python benchmarks/eval_passes.py RUN [--n 10000] [--label after] [--repeat 2]
    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python benchmarks/eval_passes.py RUN --label before

Each repeat runs in a fresh process (peak memory is per process); the first one fills the caches
(feature extractor, reference statistics), so the figures are those of the last. Another version of
genlab is measured with PYTHONPATH naming its checkout; rows are kept by label and written as one table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from write_table import read_rows, write_rows, write_table  # benchmarks/write_table.py, beside this script

CHILD = r"""
import collections, dataclasses, json, resource, sys, time
import genlab.data as D
from genlab.cli import main
reads, seconds = collections.Counter(), collections.Counter()
def counted(name, entry):
    def loader(cfg):
        started = time.perf_counter()
        try:
            return entry.loader(cfg)
        finally:
            reads[cfg.split] += 1
            seconds[cfg.split] += time.perf_counter() - started
    return dataclasses.replace(entry, loader=loader)
for name, entry in list(D.DATASETS.items()):
    D.DATASETS[name] = counted(name, entry)
started = time.perf_counter()
rc = main(["eval", *sys.argv[1:]])
total = time.perf_counter() - started
import genlab
print(json.dumps({"rc": rc, "genlab": genlab.__file__, "seconds": total, "reads": dict(reads), "read_seconds": sum(seconds.values()),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, args.run, "--n", str(args.n)], env=dict(os.environ),
                             capture_output=True, text=True, check=True).stdout
        measured = json.loads(out.strip().splitlines()[-1])
        print(measured, file=sys.stderr)
    meta = json.loads((Path(args.run) / "config.yaml").with_name("eval.json").read_text())
    row = {"label": args.label, "run": Path(args.run).name, "model": meta.get("model"),
           "dataset": meta.get("dataset"), "n": args.n, **measured}
    rows = [r for r in read_rows(__file__) if r["label"] != args.label] + [row]
    write_rows(__file__, rows)
    lines = ["| version | run | dataset | samples | train split reads | test split reads | seconds reading | "
             "eval seconds | peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['run']} ({r['model']}) | {r['dataset']} | {r['n']:,} | "
                     f"{r['reads'].get('train', 0)} | {r['reads'].get('test', 0)} | {r['read_seconds']:.1f} | "
                     f"{r['seconds']:.1f} | {r['peak_mib']:.0f} |")
    print(write_table(__file__, "\n".join(lines) + "\n\nthe last of each version's runs, caches filled\n"))


if __name__ == "__main__":
    main()
