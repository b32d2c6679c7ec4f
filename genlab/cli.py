"""The `genlab` command. Thin: each subcommand parses its flags and calls a public function.

Errors the user can fix (`GenlabError`) are printed as one line, `genlab CMD: error: ...`, with
exit status 2 (argparse's status for bad usage); Ctrl-C exits with 130 after the loop has saved.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import genlab
from genlab.errors import GenlabError

COMMANDS = {
    "train": "train a model into a run folder",
    "sample": "draw images from a trained run into an .npz file or a folder of PNGs",
    "eval": "score a run's samples, or any samples, against the data (FID, KID, IS, P/R, ...)",
    "report": "write a run's self-contained HTML report (samples, curves, metrics, diagnostics)",
    "compare": "compare runs in one HTML page (table sorted by FID, quality vs time, samples)",
    "serve": "a local web demo: generate from trained runs in the browser",
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
    from genlab.train.loop import train

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--model")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    if known.resume and known.config:
        raise GenlabError("--resume takes the run's own config.yaml; leave out --config")
    if known.resume:
        base = load_config(Path(known.resume) / "config.yaml", known.model)
    elif known.config:
        base = load_config(known.config, known.model)
    else:
        base = default_config(known.model or "gan-mlp")
    args = train_parser(base.model.name).parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if "." in k}
    if "train.minutes" in overrides and not {"train.epochs", "train.steps"} & overrides.keys():
        overrides.update({"train.epochs": None, "train.steps": None})  # --minutes alone: time decides
    if known.resume:
        if overrides.get("train.out", known.resume) != known.resume:
            raise GenlabError("--resume continues the run in its own folder; leave out --out")
        overrides["train.out"] = known.resume
    run = train(apply_overrides(base, overrides), resume_run=known.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"run folder: {run}  (samples/, loss_curve.png, model.safetensors, config.yaml, log.jsonl)")
    return 0


def cmd_sample(argv: list[str]) -> int:
    from genlab.generate import labels_for, load_run, sample_from, save_samples

    parser = argparse.ArgumentParser(prog="genlab sample", description=COMMANDS["sample"])
    parser.add_argument("run", help="run folder made by `genlab train`")
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--out", required=True,
                        help="FILE.npz (uint8 `images` [N, H, W] or [N, C, H, W]) or a folder for PNGs")
    parser.add_argument("--seed", type=int, default=0, help="noise seed: same seed, same images")
    parser.add_argument("--batch-size", type=int, default=1000, help="images generated per batch")
    parser.add_argument("--labels", help="classes for a conditional model, e.g. 0,1,2 (repeated to fill --n; "
                        "default: all classes in turn)")
    parser.add_argument("--weights", default="model.safetensors",
                        help="which weights of the run: model.safetensors (final) or best.safetensors")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a sampling option of the model's family, e.g. temperature=0.8, top_k=4, "
                             "steps=25, guidance=3 (repeatable; an unknown name lists the family's)")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        raise GenlabError(f"--batch-size must be positive, got {args.batch_size}")
    if args.n <= 0:
        raise GenlabError(f"--n must be a positive number of images, got {args.n}")
    wanted = None
    if args.labels:
        try:
            wanted = [int(x) for x in args.labels.split(",") if x.strip()]
        except ValueError:
            raise GenlabError(f"--labels takes class numbers separated by commas, got {args.labels!r}") from None
    options = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise GenlabError(f"--option takes NAME=VALUE, got {item!r}")
        options[name.strip().replace("-", "_")] = value.strip()
    _, model, _ = load_run(args.run, weights=args.weights)
    labels = labels_for(model, args.n, wanted)
    images = sample_from(model, args.n, seed=args.seed, batch_size=args.batch_size, labels=labels, options=options)
    out = save_samples(images, args.out, labels)
    print(f"wrote {len(images)} images to {out}")
    return 0


def cmd_report(argv: list[str]) -> int:
    from genlab.report.html import run_report

    parser = argparse.ArgumentParser(prog="genlab report", description=COMMANDS["report"])
    parser.add_argument("run", help="run folder made by `genlab train` (run `genlab eval RUN` first for metrics)")
    parser.add_argument("--out", help="the HTML file to write (default RUN/report.html); plots go to OUT_files/")
    args = parser.parse_args(argv)
    print(f"wrote {run_report(args.run, args.out)}")
    return 0


def cmd_compare(argv: list[str]) -> int:
    from genlab.report.html import compare_runs

    parser = argparse.ArgumentParser(prog="genlab compare", description=COMMANDS["compare"])
    parser.add_argument("runs", nargs="+", help="run folders (each evaluated with `genlab eval RUN` for metrics)")
    parser.add_argument("--out", default="compare.html", help="the HTML file to write; plots go to OUT_files/")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument("--samples", type=int, default=16, help="samples shown per run")
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= 256:
        raise GenlabError(f"--samples must lie in 1..256, got {args.samples}")
    out, table = compare_runs(args.runs, args.out, args.samples)
    if args.markdown:
        print(table)
    print(f"wrote {out}")
    return 0


def cmd_serve(argv: list[str]) -> int:
    from genlab.serve import serve

    parser = argparse.ArgumentParser(prog="genlab serve", description=COMMANDS["serve"])
    parser.add_argument("runs", nargs="+", help="run folders made by `genlab train`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--max-images", type=int, default=64, help="most images one request may ask for")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise GenlabError(f"--port must lie in 0..65535, got {args.port}")
    if not 1 <= args.max_images <= 1024:
        raise GenlabError(f"--max-images must lie in 1..1024, got {args.max_images}")
    serve(args.runs, args.host, args.port, args.max_images)
    return 0


def cmd_eval(argv: list[str]) -> int:
    from genlab.metrics.evaluate import evaluate, evaluate_run, format_table, load_samples_file

    parser = argparse.ArgumentParser(
        prog="genlab eval", description=COMMANDS["eval"],
        epilog="Scores are measured in the features of genlab's classifier of the dataset, trained "
               "once and cached; the real floor is the same metric for held-out real images.")
    parser.add_argument("run", nargs="?", help="run folder to sample from (or use --samples)")
    parser.add_argument("--samples", help="FILE.npz with `images`, or a folder of PNGs, from any generator")
    parser.add_argument("--dataset", help="dataset the samples imitate (with --samples)")
    parser.add_argument("--data-dir", help="folder of the dataset's files, where it needs one")
    parser.add_argument("--image-size", type=int, default=28, help="image size of a `folder` dataset")
    parser.add_argument("--n", type=int, default=10_000, help="samples to draw from the run")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and metric subsets")
    parser.add_argument("--features", help="a genlab feature extractor folder to use instead of the cached one")
    parser.add_argument("--resize", action="store_true", help="resize samples of another size or channel count")
    parser.add_argument("--ppl-samples", type=int, default=2000, help="latent pairs for perceptual path length")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    if (args.run is None) == (args.samples is None):
        raise GenlabError("give either a run folder or --samples FILE (with --dataset)")
    if args.n < 2:
        raise GenlabError(f"--n must be at least 2, got {args.n}")
    if args.run is not None:
        result = evaluate_run(args.run, n=args.n, seed=args.seed, features=args.features,
                              ppl_samples=args.ppl_samples, log=say)
        _write_json(Path(args.run) / "eval.json", result)
    else:
        if not args.dataset:
            raise GenlabError("--samples needs --dataset NAME: the data the samples are compared with")
        from genlab.metrics.features import load_extractor

        channels = load_extractor(args.features).image_shape[0] if args.features else 1
        images = load_samples_file(args.samples, channels)
        result = evaluate(images, dataset=args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                          features=args.features, resize=args.resize, seed=args.seed, log=say)
        result["samples"] = args.samples
    print(format_table(result))
    if args.json:
        _write_json(Path(args.json), result)
    return 0


def _write_json(path, obj) -> None:
    import json

    try:
        path.write_text(json.dumps(obj, indent=2) + "\n")
    except OSError as err:
        raise GenlabError(f"cannot write {path} ({err.strerror or err})") from None


HANDLERS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "report": cmd_report, "compare": cmd_compare,
            "serve": cmd_serve}


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab", description="Train, sample, evaluate and compare image generative models.",
        epilog="`genlab COMMAND --help` explains each command's options.")
    parser.add_argument("--version", action="version", version=f"genlab {genlab.__version__}")
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
    try:
        return HANDLERS[command](argv[1:])
    except GenlabError as err:
        print(f"genlab {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"genlab {command}: interrupted; {err or 'nothing was saved'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
