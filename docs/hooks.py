"""MkDocs hook: the command-line reference page (cli.md) is generated from the options as config.py
and the commands declare them (genlab.config.option_rows), so the docs cannot drift from the CLI."""

MARKER = "<!-- cli-reference -->"
README = "<!-- readme -->"  # index.md: the README itself, so the home page is not written twice


def table(cls) -> str:
    from genlab.config import option_rows

    lines = ["| option | default | what it does |", "|---|---|---|"]
    for flag, default, text in option_rows(cls):
        cell = text.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{flag}` | `{default}` | {cell} |")
    return "\n".join(lines)


def reference() -> str:
    from genlab.cli import COMMANDS
    from genlab.config import DataConfig, TrainConfig
    from genlab.generate import SampleOptions
    from genlab.metrics.evaluate import EvalOptions
    from genlab.models import MODELS
    from genlab.report.html import CompareOptions, ReportOptions
    from genlab.serve import ServeOptions
    from genlab.export import ExportOptions

    parts = ["## genlab train", "", COMMANDS["train"] + ".", "", "### data options", "", table(DataConfig), "",
             "### training options", "", table(TrainConfig), ""]
    for name, entry in MODELS.items():
        parts += [f"### model options: `--model {name}`", "", entry.description + ".", "", table(entry.config_class), ""]
    for command, cls in (("sample", SampleOptions), ("eval", EvalOptions), ("report", ReportOptions),
                         ("compare", CompareOptions), ("serve", ServeOptions), ("export", ExportOptions)):
        parts += [f"## genlab {command}", "", COMMANDS[command] + ".", "", table(cls), ""]
    return "\n".join(parts)


def readme() -> str:
    """The repository's README with its links made relative to docs/ (the site's home page)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", text)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    if README in markdown:
        return markdown.replace(README, readme())
    return markdown
