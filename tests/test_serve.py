"""`genlab serve`: every endpoint with good and bad parameters (a 4xx with one clear sentence, and the
server goes on serving), a small concurrent load on a live server, and a browser that clicks Generate."""

import io
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from genlab.cli import main
from genlab.errors import GenlabError

fastapi = pytest.importorskip("fastapi", reason="genlab[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from genlab.serve import create_app, load_runs  # noqa: E402

TINY = ["--limit", "128", "--batch-size", "16", "--no-progress", "--device", "cpu", "--grid-size", "8", "--steps", "4"]
ARTIFACTS = Path(os.environ.get("GENLAB_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    specs = {"gan": ["--model", "gan-mlp", "--conditional"], "vae": ["--model", "vae", "--width", "8"],
             "pixels": ["--model", "transformer", "--d-model", "16", "--layers", "1", "--heads", "2"],
             "diff": ["--model", "diffusion", "--width", "8", "--timesteps", "20", "--sample-steps", "3",
                      "--conditional"]}
    for name, args in specs.items():
        assert main(["train", *args, "--out", str(root / name), *TINY]) == 0
    return {name: root / name for name in specs}


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app(list(runs.values()), max_images=64))


def png(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as img:
        img.load()
        return img.size


def test_page_and_run_list(client):
    page = client.get("/")
    assert page.status_code == 200 and "<button id=\"generate\">" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from outside
    listed = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(listed) == {"gan", "vae", "pixels", "diff"}
    assert listed["gan"]["conditional"] and len(listed["gan"]["classes"]) == 10 and listed["gan"]["interpolation"]
    assert listed["gan"]["options"] == {} and set(listed["vae"]["options"]) == {"temperature"}
    # guidance only for a Transformer trained with label dropout, which this one was not
    assert set(listed["pixels"]["options"]) == {"temperature", "top_k"} and not listed["pixels"]["interpolation"]
    assert set(listed["diff"]["options"]) == {"sampler", "steps", "eta", "spacing", "guidance",
                                                 "guidance_low", "guidance_high"}
    assert listed["diff"]["options"]["steps"]["default"] == 3


def test_a_run_is_shown_with_both_views_of_its_scores_and_their_floors(runs, tmp_path, small_extractor):
    import shutil

    scored = tmp_path / "scored"
    shutil.copytree(runs["gan"], scored)
    assert main(["eval", str(scored), "--n", "100", "--features", str(small_extractor.path), "--ppl-samples", "10"]) == 0
    listed = TestClient(create_app([scored, runs["vae"]])).get("/api/runs").json()["runs"]
    shown = {r["name"]: r for r in listed}
    assert set(shown["scored"]["metrics"]) == {"fid", "fid_heldout", "precision", "recall", "recall_heldout"}
    assert set(shown["scored"]["floors"]) == set(shown["scored"]["metrics"])  # each beside the real data's own
    assert shown["scored"]["floors"]["fid"] < shown["scored"]["metrics"]["fid"]  # 4 steps of a GAN: far off
    assert shown["vae"]["metrics"] == {} and shown["vae"]["floors"] == {}  # not evaluated


def test_generate_grids(client):
    size = png(client.get("/api/generate.png", params={"run": "gan", "seed": 3, "count": 16}))
    assert size == (3 * (2 + 8 * 30), 3 * (2 + 2 * 30))  # 8 per row, 2 rows, enlarged 3x
    a = client.get("/api/generate.png", params={"run": "gan", "seed": 3, "count": 16, "label": 7}).content
    assert a == client.get("/api/generate.png", params={"run": "gan", "seed": 3, "count": 16, "label": 7}).content
    assert a != client.get("/api/generate.png", params={"run": "gan", "seed": 4, "count": 16, "label": 7}).content
    png(client.get("/api/generate.png", params={"run": "vae", "count": 4, "temperature": 0.5}))
    png(client.get("/api/generate.png", params={"run": "pixels", "count": 2, "top_k": 2}))
    png(client.get("/api/generate.png", params={"run": "diff", "count": 2, "steps": 2, "guidance": 2, "label": 1}))


def test_interpolation_frames(client):
    frames = [client.get("/api/interpolate.png", params={"run": run, "seed_a": 1, "seed_b": 2, "t": t}).content
              for run in ("gan", "vae") for t in (0, 0.5, 1)]
    for f in frames:
        with Image.open(io.BytesIO(f)) as img:
            assert img.size == (3 * 32, 3 * 32)
    assert frames[0] != frames[1] != frames[2]


@pytest.mark.parametrize("path, params, status, message", [
    ("/api/generate.png", {"run": "gan", "count": -1}, 400, "count must lie in 1..64"),
    ("/api/generate.png", {"run": "gan", "count": 100000}, 400, "count must lie in 1..64"),
    ("/api/generate.png", {"run": "gan", "count": "many"}, 400, "count must be a whole number"),
    ("/api/generate.png", {"run": "gan", "label": 10}, 400, "label must lie in 0..9"),
    ("/api/generate.png", {"run": "vae", "label": 1}, 400, "not class-conditional"),
    ("/api/generate.png", {"run": "nope"}, 404, "unknown run 'nope'; known runs: gan, vae, pixels, diff"),
    ("/api/generate.png", {}, 400, "give the run's name"),
    ("/api/generate.png", {"run": "gan", "seed": -5}, 400, "seed must lie in 0.."),
    ("/api/generate.png", {"run": "vae", "temperature": "hot"}, 400, "temperature takes a float"),
    ("/api/generate.png", {"run": "vae", "temperature": 0}, 400, "temperature must be positive"),
    ("/api/generate.png", {"run": "diff", "steps": 0}, 400, "sampling steps must lie in 1..20"),
    ("/api/generate.png", {"run": "pixels", "top_k": 99}, 400, "top_k must lie in 0..16"),
    ("/api/interpolate.png", {"run": "pixels"}, 400, "has no latent space"),
    ("/api/interpolate.png", {"run": "gan", "t": 2}, 400, "t must lie in [0, 1]"),
    ("/api/generate.png", {"run": "gan", "x": "y" * 5000}, 414, "request too long"),
])
def test_bad_parameters_get_a_4xx_with_one_sentence_and_the_server_goes_on(client, path, params, status, message):
    response = client.get(path, params=params)
    assert response.status_code == status
    assert message in response.json()["detail"]
    png(client.get("/api/generate.png", params={"run": "gan", "count": 1}))  # still serving


def test_large_body_and_unknown_paths(client):
    assert client.post("/api/generate.png", content=b"x" * 20000).status_code == 413
    assert client.get("/api/nothing").status_code == 404
    assert client.post("/api/generate.png").status_code == 405


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    with pytest.raises(GenlabError, match="not a genlab run folder"):
        load_runs([tmp_path])
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a genlab run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-images", "0"]) == 2


@pytest.fixture(scope="module")
def live(runs):
    """The app on a real uvicorn server on a free loopback port, in a thread."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(list(runs.values())), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_200_requests_from_8_clients_all_answered(live):
    import httpx

    def client_session(i):
        latencies = []
        with httpx.Client(base_url=live, timeout=60) as c:
            for j in range(25):
                start = time.perf_counter()
                r = c.get("/api/generate.png", params={"run": "gan", "seed": i * 100 + j, "count": 16})
                latencies.append(time.perf_counter() - start)
                assert r.status_code == 200
        return latencies

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        latencies = sorted(sum(pool.map(client_session, range(8)), []))
    assert len(latencies) == 200 and time.monotonic() - start < 120


CHROMIUM = __import__("shutil").which("chromium")


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_browser_clicks_generate_and_sees_a_grid(live):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.report.test_html import chromium_driver

    driver = chromium_driver()
    try:
        driver.get(live + "/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "run").get_attribute("value"))
        driver.find_element(By.ID, "count").clear()
        driver.find_element(By.ID, "count").send_keys("32")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "const i = document.getElementById('grid'); return i.complete && i.naturalWidth > 0;"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "serve.png"
        driver.save_screenshot(str(shot))
        grid_png = driver.find_element(By.ID, "grid").screenshot_as_png
    finally:
        driver.quit()
    with Image.open(io.BytesIO(grid_png)) as grid:
        lo, hi = grid.convert("L").getextrema()
        assert hi - lo > 100  # white padding and drawn pixels: not a blank image
    assert shot.stat().st_size > 0


def test_prompt_matching_is_for_a_run_trained_on_captions(client):
    res = client.get("/api/rate/next", params={"run": "gan", "protocol": "prompt-match", "rater": "r1"})
    assert res.status_code == 400 and "--text" in res.json()["detail"]
