"""HTML run reports and comparisons: every section present, every image decodes, nothing loaded from
the network; and a headless Chromium that opens the page from disk and sees its images rendered."""

import base64
import io
import os
import shutil
from html.parser import HTMLParser

import pytest
from PIL import Image

from genlab.cli import main

SECTIONS = ["overview", "config", "samples", "classes", "curves", "metrics", "diagnostics", "views"]
TINY = ["--limit", "256", "--batch-size", "32", "--no-progress", "--device", "cpu", "--grid-size", "20",
        "--log-every", "2"]


class Page(HTMLParser):
    """The section ids, image sources and every URL-bearing attribute of a page."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.images, self.urls = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("src", "href", "action", "data"):
            if name in attrs:
                self.urls.append(attrs[name])


def check_page(path):
    text = path.read_text()
    page = Page(text)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            img.load()
            assert img.width > 0 and img.height > 0
    assert all(u.startswith("data:") for u in page.urls), [u[:40] for u in page.urls if not u.startswith("data:")]
    assert "http://" not in text and "https://" not in text and "<script" not in text
    return page


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_extractor):
    """A conditional DCGAN and a VAE, trained a few steps and evaluated with the quick extractor."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in (("dcgan", ["--conditional", "--width", "8"]), ("vae", ["--width", "8"])):
        run = root / name
        assert main(["train", "--model", name, "--steps", "16", "--out", str(run), *TINY, *extra]) == 0
        assert main(["eval", str(run), "--n", "200", "--features", str(small_extractor.path), "--ppl-samples", "20"]) == 0
        made[name] = run
    return made


def test_run_report_has_every_section_and_only_inline_images(runs, tmp_path):
    out = tmp_path / "r" / "gan.html"
    assert main(["report", str(runs["dcgan"]), "--out", str(out)]) == 0
    page = check_page(out)
    assert page.sections == SECTIONS
    assert len(page.images) == 5  # 2 epoch grids, the per-class grid, curves, interpolation
    assert (tmp_path / "r" / "gan_files" / "curves.png").is_file()
    text = out.read_text()
    assert "D(x)" in text and "fid" in text and "real floor" in text and "one column per class" in text


def test_vae_report_shows_reconstructions_and_likelihood(runs):
    assert main(["report", str(runs["vae"])]) == 0
    out = runs["vae"] / "report.html"
    page = check_page(out)
    assert page.sections == SECTIONS
    text = out.read_text()
    for expected in ("reconstructions", "one latent dimension per row", "nll_nats", "Likelihood: test images binarised",
                     "An unconditional model"):
        assert expected in text


def test_compare_sorts_by_fid_and_shows_samples_side_by_side(runs, tmp_path, capsys):
    out = tmp_path / "c.html"
    assert main(["compare", str(runs["vae"]), str(runs["dcgan"]), "--out", str(out), "--markdown",
                 "--samples", "8"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and "FID" not in line]
    cells = [r.split("|")[6].split() for r in rows]  # "FID (floor)"
    fids = [float(c[0]) for c in cells]
    assert fids == sorted(fids) and len(rows) == 2
    assert all(len(c) == 2 and c[1] == cells[0][1] and float(c[1].strip("()")) < min(fids) for c in cells)
    page = check_page(out)
    assert page.sections == ["table", "quality", "samples"]
    assert len(page.images) == 3  # the plot and one grid per run
    assert (tmp_path / "c_files" / "quality_vs_time.png").is_file()


def test_compare_says_which_scores_do_not_rank(runs, tmp_path, capsys):
    import torch

    class Pool(torch.nn.Module):  # another extractor: 4x4 average pooling of the pixels
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    torch.jit.save(torch.jit.script(Pool()), tmp_path / "pool.pt")
    other = tmp_path / "vae-pooled"
    shutil.copytree(runs["vae"], other)
    assert main(["eval", str(other), "--n", "100", "--features", str(tmp_path / "pool.pt"), "--ppl-samples", "20"]) == 0
    capsys.readouterr()
    out = tmp_path / "c.html"
    assert main(["compare", str(runs["vae"]), str(other), str(runs["dcgan"]), "--out", str(out), "--markdown",
                 "--samples", "4"]) == 0
    captured = capsys.readouterr()
    rows = [line.split(" | ") for line in captured.out.splitlines() if line.startswith("| ") and "FID" not in line]
    scored_in = [r[-1].rstrip(" |") for r in rows]
    same = [s for s in scored_in if s.endswith("(200)")]
    assert len(same) == 2 and len(set(same)) == 1 and not same[0].startswith("torchscript-")
    assert sum(s.startswith("torchscript-") and s.endswith("(100)") for s in scored_in) == 1
    # the two runs scored in one extractor sit together, ranked by FID
    fids = [float(r[5].split()[0]) for r in rows if r[-1].rstrip(" |").endswith("(200)")]
    assert fids == sorted(fids) and not rows[1][-1].startswith("torchscript-")
    assert "warning: These runs were scored in 2 different feature spaces (mnist-sample-" in captured.err
    assert "warning: These runs were scored with different numbers of samples (100, 200)" in captured.err
    text = out.read_text()
    assert "rank only within one" in text and "Evaluate them with the same --n" in text
    # one extractor and one sample count: nothing to warn about
    assert main(["compare", str(runs["vae"]), str(runs["dcgan"]), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err and "rank only within" not in out.read_text()


def test_report_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a genlab run folder" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "not a genlab run folder" in capsys.readouterr().err


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def chromium_driver():
    """Headless Chromium driven by Debian's chromedriver, with its background networking off."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1200,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(DRIVER))


def open_in_chromium(path, screenshot):
    """Open `path` from disk in headless Chromium; returns the images' natural widths."""
    driver = chromium_driver()
    try:
        driver.get(path.resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0);")
        driver.save_screenshot(str(screenshot))
        return widths
    finally:
        driver.quit()


@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                    reason="Chromium and chromedriver are not installed (.ci/run installs them)")
def test_chromium_renders_the_report(runs, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(runs["dcgan"]), "--out", str(out)]) == 0
    shot = tmp_path / "report.png"
    widths = open_in_chromium(out, shot)
    assert widths and all(w > 0 for w in widths), widths
    with Image.open(shot) as img:
        grey = img.convert("L")
        lo, hi = grey.getextrema()
        assert hi - lo > 100 and len(grey.histogram()) - grey.histogram().count(0) > 20  # not a blank page


def test_compare_says_how_each_runs_samples_were_drawn(runs, tmp_path, capsys):
    from genlab.report.html import sampling_cell

    assert main(["compare", str(runs["vae"]), "--out", str(tmp_path / "c.html"), "--markdown", "--samples", "4"]) == 0
    table = capsys.readouterr().out
    assert "sampled with" in table.splitlines()[0]
    assert table.splitlines()[2].split(" | ")[-2].endswith("s / 200")  # its eval's 200 samples, timed
    cell = sampling_cell({"seconds": 9.84, "nfe": 10, "options": {"sampler": "dpm++2m", "steps": 10, "eta": 0.0,
                                                                  "spacing": "uniform"}}, 10_000)
    assert cell == "dpm++2m, 10 steps, 10 NFE, eta 0.0, 9.8 s / 10,000"
    assert sampling_cell(None, 10_000) == "-"  # an eval.json from before genlab recorded it
