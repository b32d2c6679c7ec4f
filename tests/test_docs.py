"""The documentation cannot drift: the site builds in MkDocs' strict mode (a broken link, a missing
page or a docstring reference to nothing fails), its command-line reference is generated from the
options, the README stays a page, and the fenced bash blocks marked `<!-- runnable -->` run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
RUNNABLE = re.compile(r"<!-- runnable -->\s*```bash\n(.*?)```", re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    return [(f"{page.name}:{i}", block) for page in sorted(DOCS.glob("*.md"))
            for i, block in enumerate(RUNNABLE.findall(page.read_text()))]


def test_the_site_builds_in_strict_mode(tmp_path):
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    for flag in ("--sampler", "--prompt", "--timestep-sampling", "--negative-prompt", "--eval-every"):
        assert flag in cli  # generated from the declarations, every command and family
    assert "genlab.generate.Trained" in (tmp_path / "site" / "api" / "index.html").read_text()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "genlab").symlink_to(ROOT / "genlab")
    page = copy / "docs" / "datasets.md"
    page.write_text(page.read_text() + "\n[nowhere](no-such-page.md)\n")
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=copy, capture_output=True, text=True)
    assert done.returncode != 0 and "no-such-page.md" in done.stderr


def test_the_readme_is_a_page_and_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text.split("##")[0] and "make test" in text.split("##")[0]
    # every score in the families' table names the benchmark script that measured it, and it exists
    table = text.split("## Families")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert len(rows) >= 8
    for row in rows:
        script = re.search(r"`(\w+\.py)` \|$", row)
        assert script and (ROOT / "benchmarks" / script.group(1)).is_file(), row


def test_there_are_runnable_blocks():
    assert len(runnable_blocks()) >= 2


@pytest.mark.parametrize("name, block", runnable_blocks(), ids=[n for n, _ in runnable_blocks()])
def test_runnable_docs_blocks_run(name, block, tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{name}:\n{block}\n{done.stderr[-2000:]}"
