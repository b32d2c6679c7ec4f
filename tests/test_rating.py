"""People rating samples in `genlab serve`: the two protocols, every vote one durable line, scores
with intervals, bad votes refused, 400 votes from 8 concurrent clients all kept, and a browser that
answers 20 items by clicking."""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from genlab.cli import main
from genlab.core.run import Run
from genlab.metrics.human import bootstrap_interval, human_scores

fastapi = pytest.importorskip("fastapi", reason="genlab[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from genlab.serve import create_app  # noqa: E402

TINY = ["--limit", "128", "--batch-size", "16", "--no-progress", "--device", "cpu", "--grid-size", "4", "--steps", "3"]


@pytest.fixture
def runs(tmp_path):
    for name, extra in (("a", ["--conditional"]), ("b", ["--conditional", "--seed", "1"])):
        assert main(["train", "--model", "gan-mlp", *extra, "--out", str(tmp_path / name), *TINY]) == 0
    return {name: tmp_path / name for name in ("a", "b")}


def ratings(run) -> list[dict]:
    return Run(run).read_lines(Run.RATINGS)


def test_real_or_fake_shows_half_real_images_and_scores_the_votes(runs):
    client = TestClient(create_app(list(runs.values())))
    truths = []
    for i in range(10):
        item = client.get("/api/rate/next", params={"run": "a", "rater": "alice"}).json()
        assert item["images"][0].startswith("data:image/png;base64,")
        r = client.post("/api/rate/vote", json={"item": item["item"], "answer": "real", "rater": "alice"})
        assert r.status_code == 200, r.text
    lines = ratings(runs["a"])
    assert len(lines) == 10 and sorted({x["truth"] for x in lines}) == ["fake", "real"]
    truths = [x["truth"] for x in lines]
    assert truths.count("real") == 5  # each pair of items: one real, one fake
    scores = client.get("/api/rate/scores", params={"run": "a"}).json()["scores"]
    assert scores["error_rate"]["value"] == 0.5 and scores["error_rate"]["votes"] == 10  # "real" to all: half wrong
    assert scores["fake_error_rate"]["value"] == 1.0
    assert scores["error_rate"]["low"] <= 0.5 <= scores["error_rate"]["high"]
    again = TestClient(create_app(list(runs.values())))  # the same rater sees the same sequence on a new server
    first = again.get("/api/rate/next", params={"run": "a", "rater": "alice"}).json()
    assert first["images"] == [TestClient(create_app(list(runs.values()))).get(
        "/api/rate/next", params={"run": "a", "rater": "alice"}).json()["images"][0]]


def test_a_or_b_records_the_vote_in_both_runs(runs):
    client = TestClient(create_app(list(runs.values())))
    for _ in range(4):
        item = client.get("/api/rate/next", params={"run": "a", "other": "b", "protocol": "a-or-b", "rater": "bo"}).json()
        assert len(item["images"]) == 2
        client.post("/api/rate/vote", json={"item": item["item"], "answer": "left", "rater": "bo"})
    a, b = ratings(runs["a"]), ratings(runs["b"])
    assert a == b and len(a) == 4 and all(x["chosen"] == x["left"] for x in a)
    share_a = human_scores(a, "a")["preference"]["value"]
    assert share_a + human_scores(b, "b")["preference"]["value"] == pytest.approx(1.0)


@pytest.mark.parametrize("request_, status, message", [
    (("get", "/api/rate/next", {"run": "a", "protocol": "hype", "rater": "x"}), 400, "unknown protocol 'hype'"),
    (("get", "/api/rate/next", {"run": "zz", "rater": "x"}), 404, "unknown run 'zz'"),
    (("get", "/api/rate/next", {"run": "a", "rater": "<script>"}), 400, "rater id"),
    (("get", "/api/rate/next", {"run": "a", "protocol": "a-or-b", "rater": "x"}), 404, "A or B compares two runs"),
    (("post", "/api/rate/vote", {"item": "feedbeef", "answer": "real", "rater": "x"}), 400, "did not serve it"),
    (("post", "/api/rate/vote", [1, 2]), 400, "a JSON object"),
])
def test_bad_votes_get_a_4xx_with_one_sentence(runs, request_, status, message):
    client = TestClient(create_app(list(runs.values())))
    method, url, data = request_
    r = client.get(url, params=data) if method == "get" else client.post(url, json=data)
    assert r.status_code == status and message in r.json()["detail"]
    assert ratings(runs["a"]) == []


def test_an_item_is_answered_once_and_a_large_body_is_refused(runs):
    client = TestClient(create_app(list(runs.values())))
    item = client.get("/api/rate/next", params={"run": "a", "rater": "x"}).json()["item"]
    assert client.post("/api/rate/vote", json={"item": item, "answer": "maybe", "rater": "x"}).status_code == 400
    assert client.post("/api/rate/vote", json={"item": item, "answer": "fake", "rater": "x"}).status_code == 200
    assert client.post("/api/rate/vote", json={"item": item, "answer": "fake", "rater": "x"}).status_code == 400
    big = client.post("/api/rate/vote", content=b"{" + b" " * 20_000 + b"}", headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and len(ratings(runs["a"])) == 1


def test_8_clients_cast_400_votes_and_none_is_lost_or_torn(runs):
    import socket

    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(list(runs.values())), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        def rater(i):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                for _ in range(50):
                    item = c.get("/api/rate/next", params={"run": "a", "rater": f"r{i}"}).json()["item"]
                    r = c.post("/api/rate/vote", json={"item": item, "answer": "fake", "rater": f"r{i}"})
                    assert r.status_code == 200

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(rater, range(8)))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    raw = (runs["a"] / "ratings.jsonl").read_text().splitlines()
    lines = [json.loads(x) for x in raw]  # every line whole JSON
    assert len(lines) == 400 and {x["rater"] for x in lines} == {f"r{i}" for i in range(8)}
    assert all(sum(x["rater"] == f"r{i}" for x in lines) == 50 for i in range(8))


def test_scores_show_in_eval_report_and_compare(runs, small_extractor, tmp_path, capsys):
    client = TestClient(create_app(list(runs.values())))
    for _ in range(6):
        item = client.get("/api/rate/next", params={"run": "a", "rater": "c"}).json()["item"]
        client.post("/api/rate/vote", json={"item": item, "answer": "fake", "rater": "c"})
    assert main(["eval", str(runs["a"]), "--n", "100", "--features", str(small_extractor.path), "--ppl-samples", "10",
                 "--json", str(tmp_path / "e.json")]) == 0
    assert "people: human error rate" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["human"]["error_rate"]["votes"] == 6
    assert main(["report", str(runs["a"])]) == 0 and "6 votes" in (runs["a"] / "report.html").read_text()
    assert main(["compare", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "c.html"), "--markdown"]) == 0
    assert "6 votes" in capsys.readouterr().out
    assert "6 votes" in (runs["a"] / "README.md").read_text()  # the model card too


def test_the_bootstrap_interval_covers_the_mean_and_narrows():
    small, large = bootstrap_interval([1, 0] * 5), bootstrap_interval([1, 0] * 200)
    assert small[0] < 0.5 < small[1] and large[1] - large[0] < small[1] - small[0]


CHROMIUM = __import__("shutil").which("chromium")


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="Chromium is not installed (.ci/run installs it)")
def test_a_browser_rates_20_items_by_clicking(runs):
    import socket

    import uvicorn
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.report.test_html import chromium_driver

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(list(runs.values())), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    driver = chromium_driver()
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "run").get_attribute("value"))
        driver.find_element(By.ID, "rate-start").click()
        shown = "#rate-buttons:not([hidden]) .answer"  # revealed only once the next item's buttons are in place
        for i in range(20):
            buttons = WebDriverWait(driver, 30, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, shown)) == 2 and d.find_elements(By.CSS_SELECTOR, shown))
            buttons[i % 2].click()
            WebDriverWait(driver, 30).until(lambda d: f"{i + 1} votes" in d.find_element(By.ID, "rate-score").text)
        score = driver.find_element(By.ID, "rate-score").text
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)
    lines = ratings(runs["a"])
    assert len(lines) == 20 and {x["answer"] for x in lines} == {"real", "fake"}
    assert "human error rate" in score and "20 votes" in score
