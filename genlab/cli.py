"""The `genlab` command. Thin: each subcommand's flags are generated from the typed definitions
the package's functions take (TrainConfig and the model configs; SampleOptions, EvalOptions,
ReportOptions, CompareOptions, ServeOptions, ExportOptions), and the subcommand calls that function.

Errors the user can fix (`GenlabError`) are printed as one line, `genlab CMD: error: ...`, with
exit status 2 (argparse's status for bad usage); Ctrl-C exits with 130 after the loop has saved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from genlab.core.allocator import keep_freed_memory
from genlab.errors import GenlabError
from genlab.version import __version__

COMMANDS = {
    "train": "train a model into a run folder",
    "sample": "draw images from a trained run into an .npz file or a folder of PNGs",
    "eval": "score a run's samples, or any samples, against the data (FID, KID, IS, P/R, ...)",
    "report": "write a run's self-contained HTML report (samples, curves, metrics, diagnostics)",
    "compare": "compare runs in one HTML page (table sorted by FID, quality vs time, samples)",
    "serve": "a local web demo: generate from trained runs in the browser, and let people rate them",
    "export": "write a portable folder of a run (config.json, model.safetensors, README.md) that genlab.load reads",
}


def _catalogue() -> str:
    from genlab.data import DATASETS
    from genlab.models import MODELS

    lines = ["models:"] + [f"  {n:<16} {e.description}" for n, e in MODELS.items()]
    lines += ["datasets:"] + [f"  {n:<16} {e.description}" for n, e in DATASETS.items()]
    return "\n".join(lines)


def train_parser(model_name: str) -> argparse.ArgumentParser:
    from genlab.config import DataConfig, TrainConfig, add_section_flags, model_config_class

    parser = argparse.ArgumentParser(
        prog="genlab train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model. Settings come from the defaults, then --config, then flags; "
                    "the resolved config is saved in the run folder.",
        epilog=_catalogue() + f"\n\nmodel options above are those of {model_name}; "
                              "`genlab train --model NAME --help` shows another family's.")
    parser.add_argument("--config", metavar="YAML", help="YAML config (sections data, model, train)")
    parser.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint (flags "
                        "may change budgets, not the model, data, batch size or seed)")
    add_section_flags(parser, "model", model_config_class(model_name))
    add_section_flags(parser, "data", DataConfig)
    add_section_flags(parser, "train", TrainConfig)
    return parser


def cmd_train(argv: list[str]) -> int:
    from genlab.config import apply_overrides, default_config, load_config
    from genlab.core.run import Run
    from genlab.training.trainer import resume, train

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--model")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    if known.resume and known.config:
        raise GenlabError("--resume takes the run's own config.yaml; leave out --config")
    if known.resume:
        base = Run.open(known.resume).config
    elif known.config:
        base = load_config(known.config, known.model)
    else:
        base = default_config(known.model or "gan-mlp")
    args = train_parser(base.model.name).parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if "." in k}
    if known.resume:
        run = resume(known.resume, **overrides)
    else:
        run = train(apply_overrides(base, overrides))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"run folder: {run}  (samples/, loss_curve.png, model.safetensors, config.yaml, log.jsonl)")
    return 0


def cmd_sample(argv: list[str]) -> int:
    from genlab.config import parse_command
    from genlab.generate import SampleOptions, sample_command

    out, n = sample_command(parse_command("genlab sample", SampleOptions, argv, COMMANDS["sample"]),
                            log=lambda text: print(text, file=sys.stderr))
    print(f"wrote {n} images to {out}")
    return 0


def cmd_eval(argv: list[str]) -> int:
    from genlab.config import parse_command
    from genlab.metrics.evaluate import EvalOptions, eval_command, format_table

    opts = parse_command("genlab eval", EvalOptions, argv, COMMANDS["eval"],
                         epilog="Scores are measured in the features of genlab's classifier of the dataset, trained "
                                "once and cached; the real floor is the same metric for held-out real images.")
    result = eval_command(opts, log=lambda text: print(text, file=sys.stderr))
    print(format_table(result))
    if opts.json:
        _write_json(Path(opts.json), result)
    return 0


def cmd_report(argv: list[str]) -> int:
    from genlab.config import parse_command
    from genlab.report.html import ReportOptions, run_report

    opts = parse_command("genlab report", ReportOptions, argv, COMMANDS["report"])
    print(f"wrote {run_report(opts.run, opts.out)}")
    return 0


def cmd_compare(argv: list[str]) -> int:
    from genlab.config import parse_command
    from genlab.report.html import CompareOptions, compare_runs

    opts = parse_command("genlab compare", CompareOptions, argv, COMMANDS["compare"])
    out, table, notes = compare_runs(opts.runs, opts.out, opts.samples)
    if opts.markdown:
        print(table)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def cmd_serve(argv: list[str]) -> int:
    from genlab.config import parse_command
    from genlab.serve import ServeOptions, serve

    opts = parse_command("genlab serve", ServeOptions, argv, COMMANDS["serve"])
    serve(opts.runs, opts.host, opts.port, opts.max_images)
    return 0


def cmd_export(argv: list[str]) -> int:
    from genlab.config import parse_command
    from genlab.export import ExportOptions, export_run

    opts = parse_command("genlab export", ExportOptions, argv, COMMANDS["export"])
    out = export_run(opts.run, opts.out, opts.overwrite, opts.weights)
    print(f"wrote {out}  (config.json, model.safetensors, README.md; genlab.load(\"{out}\") reads it)")
    return 0


def _write_json(path: Path, obj) -> None:
    try:
        path.write_text(json.dumps(obj, indent=2) + "\n")
    except OSError as err:
        raise GenlabError(f"cannot write {path} ({err.strerror or err})") from None


HANDLERS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "report": cmd_report, "compare": cmd_compare,
            "serve": cmd_serve, "export": cmd_export}


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab", description="Train, sample, evaluate and compare image generative models.",
        epilog="`genlab COMMAND --help` explains each command's options.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in HANDLERS:
        top_parser().parse_args(argv or ["--help"])  # prints help, version or the usage error
        return 2
    command = argv[0]
    keep_freed_memory()
    try:
        return HANDLERS[command](argv[1:])
    except GenlabError as err:
        print(f"genlab {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # training's own says what it kept; a bare Ctrl-C elsewhere says nothing
        print(f"genlab {command}: interrupted" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
