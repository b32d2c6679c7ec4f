"""`genlab serve`: a local web demo of trained runs (FastAPI on uvicorn, one small page, no network).

The page lists the runs, draws a grid for a seed, a count and (conditional models) a class, offers
the sampling options of the run's family (temperature, top-k, DDIM steps, guidance) and only those,
interpolates between two seeds with a slider (families with a latent space), and downloads the grid
as PNG. Its Rate view asks people what the metrics cannot: "real or fake?" one image at a time (half
held-out real images, half samples, in an order fixed by seeds), or "A or B?" for two runs' samples
of the same class side by side, or for a text run "which of two images shows this prompt?"; each
vote is one line of RUN/ratings.jsonl (genlab.metrics.human
scores them). Every endpoint checks its parameters and answers a bad one with a 4xx and one
sentence; the server keeps serving. The page loads nothing from outside: its script and style are
inline.

Endpoints: GET / (the page), GET /api/runs, GET /api/generate.png, GET /api/interpolate.png,
GET /api/rate/next, POST /api/rate/vote, GET /api/rate/scores.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at run time

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from genlab.config import option
from genlab.core.images import make_grid, png_bytes
from genlab.core.run import Run
from genlab.errors import GenlabError
from genlab.data import load_heldout
from genlab.generate import labels_for, load, prompt_tokens, sample_from, sampling_options
from genlab.metrics.human import PROTOCOLS, human_scores
from genlab.metrics.scores import slerp
from genlab.models.common import describe_options, to_uint8
from genlab.models.protocols import LatentSpace
from genlab.models.text import tokenize

@dataclass
class ServeOptions:
    """`genlab serve RUN...`: a local web demo of trained runs."""

    runs: list[str] = option([], "run folders made by `genlab train`", positional=True)
    host: str = option("127.0.0.1", "address to listen on (default: this machine only)")
    port: int = option(7860, "port to listen on")
    max_images: int = option(64, "most images one request may ask for")

    def validate(self) -> None:
        if not self.runs:
            raise GenlabError("give at least one run folder to serve")
        if not 0 <= self.port <= 65535:
            raise GenlabError(f"--port must lie in 0..65535, got {self.port}")
        if not 1 <= self.max_images <= 1024:
            raise GenlabError(f"--max-images must lie in 1..1024, got {self.max_images}")


MAX_SEED = 2**31 - 1
MAX_QUERY = 2048  # bytes of query string accepted; longer requests get 414
# the scores the page shows beside a run (from its eval.json), each with its real-data floor: both
# views of FID and recall, so that a score against the training split is never shown alone
SHOWN_METRICS = ("fid", "fid_heldout", "precision", "recall", "recall_heldout", "nll_nats")
MAX_PROMPT = 500  # bytes of a prompt accepted (the text encoder reads 63); longer get 413
MAX_BODY = 16 * 1024  # bytes of body accepted (no endpoint takes one); larger get 413


@dataclass
class LoadedRun:
    """A run's model in memory, with what the page shows about it."""

    name: str
    path: Path
    model: object
    meta: dict
    metrics: dict  # the run's eval.json: {name: value}, and in `floors` {name: real data's own score}
    floors: dict = field(default_factory=dict)
    config: object = None  # the run's RunConfig (its data: the held-out images of "real or fake")
    lock: threading.Lock = field(default_factory=threading.Lock)  # one request at a time per model
    _heldout: object = None

    def heldout(self) -> torch.Tensor:
        """The held-out images of the run's data (uint8), loaded once."""
        return self.heldout_set().images

    def heldout_set(self):
        """The held-out split of the run's data (an ImageSet, its captions too), loaded once."""
        if self._heldout is None:
            try:
                data = load_heldout(self.config.data)
            except GenlabError as err:
                raise BadRequest(f"the held-out images of {self.meta.get('dataset')} are not on this machine: {err}",
                                 409) from None
            if data is None:
                raise BadRequest(f"dataset {self.meta.get('dataset')} has no held-out images to show", 409)
            self._heldout = data
        return self._heldout

    def describe(self) -> dict:
        k = self.model.conditional_classes
        names = self.meta.get("class_names") or [str(i) for i in range(k or 0)]
        return {"name": self.name, "model": self.meta.get("model"), "dataset": self.meta.get("dataset"),
                "steps": self.meta.get("steps"), "conditional": bool(k), "classes": names[:k] if k else [],
                "text": bool(getattr(self.model, "takes_text", False)),
                "interpolation": isinstance(self.model, LatentSpace), "metrics": self.metrics,
                "floors": self.floors, "options": self.options()}

    def options(self) -> dict:
        """The family's sampling options; a negative prompt only where the model reads text."""
        known = describe_options(self.model.sampling_defaults())
        if not getattr(self.model, "takes_text", False):
            known.pop("negative_prompt", None)
        return known


def load_runs(paths: list[str | Path]) -> dict[str, LoadedRun]:
    """Load every run once (a folder that is not a genlab run is refused, naming it)."""
    runs: dict[str, LoadedRun] = {}
    for p in map(Path, paths):
        run = Run.open(p)
        if run.name in runs:
            raise GenlabError(f"two runs are named {run.name!r}; serve runs whose folder names differ")
        trained = load(p)
        saved = (run.eval or {}).get("metrics", {})
        shown = [k for k in SHOWN_METRICS if saved.get(k, {}).get("value") is not None]
        metrics = {k: saved[k]["value"] for k in shown}
        floors = {k: saved[k]["floor"] for k in shown if saved[k].get("floor") is not None}
        runs[run.name] = LoadedRun(run.name, p, trained.family, trained.meta, metrics, floors, trained.config)
    if not runs:
        raise GenlabError("give at least one run folder to serve")
    return runs


# ---------------------------------------------------------------- parameter checks

class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _int(params, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must lie in {low}..{high}, got {value}")
    return value


def _run(runs: dict[str, LoadedRun], params) -> LoadedRun:
    name = params.get("run")
    if not name:
        raise BadRequest("give the run's name: ?run=NAME (GET /api/runs lists them)")
    if name not in runs:
        raise BadRequest(f"unknown run {name!r}; known runs: {', '.join(runs)}", 404)
    return runs[name]


def _label(run: LoadedRun, params) -> int | None:
    k = run.model.conditional_classes
    raw = params.get("label")
    if raw in (None, ""):
        return None
    if not k:
        raise BadRequest(f"run {run.name} is not class-conditional; leave out label")
    return _int(params, "label", 0, 0, k - 1)


def _prompt(run: LoadedRun, params) -> str | None:
    raw = params.get("prompt")
    if raw is None:
        return None
    if len(raw.encode()) > MAX_PROMPT:
        raise BadRequest(f"prompt too long: at most {MAX_PROMPT} bytes", 413)
    if not getattr(run.model, "takes_text", False):
        raise BadRequest(f"run {run.name} was not trained on captions (--text); leave out prompt")
    return raw


def _options(run: LoadedRun, params) -> dict:
    known = run.options()
    given = {name: params[name] for name in known if params.get(name) not in (None, "")}
    try:
        return sampling_options(run.model, given)
    except GenlabError as err:
        raise BadRequest(str(err)) from None


def _png(images: torch.Tensor, nrow: int) -> bytes:
    return png_bytes(make_grid(images, nrow=nrow), scale=3)


# ---------------------------------------------------------------- the work behind the endpoints

def generate_png(run: LoadedRun, params, max_images: int) -> bytes:
    count = _int(params, "count", 16, 1, max_images)
    seed = _int(params, "seed", 0, 0, MAX_SEED)
    label = _label(run, params)
    prompt = _prompt(run, params)
    options = _options(run, params)
    if len(str(options.get("negative_prompt", "")).encode()) > MAX_PROMPT:
        raise BadRequest(f"negative_prompt too long: at most {MAX_PROMPT} bytes", 413)
    with run.lock:
        if getattr(run.model, "takes_text", False):
            labels = prompt_tokens(run.model, count, [prompt or ""])
        else:
            labels = labels_for(run.model, count, [label] if label is not None else None)
        try:
            images = sample_from(run.model, count, seed=seed, labels=labels, options=options)
        except GenlabError as err:  # e.g. steps above the model's T
            raise BadRequest(str(err)) from None
    return _png(images, nrow=min(count, 8))


def interpolate_png(run: LoadedRun, params) -> bytes:
    if not isinstance(run.model, LatentSpace):
        raise BadRequest(f"run {run.name} ({run.meta.get('model')}) has no latent space to interpolate in")
    seed_a, seed_b = _int(params, "seed_a", 0, 0, MAX_SEED), _int(params, "seed_b", 1, 0, MAX_SEED)
    raw = params.get("t", "0.5")
    try:
        t = float(raw)
    except ValueError:
        raise BadRequest(f"t must be a number in [0, 1], got {raw!r}") from None
    if not 0 <= t <= 1:
        raise BadRequest(f"t must lie in [0, 1], got {t}")
    label = _label(run, params)
    dim = run.model.latent_dim
    z = slerp(torch.randn(1, dim, generator=torch.Generator().manual_seed(seed_a)),
              torch.randn(1, dim, generator=torch.Generator().manual_seed(seed_b)), torch.tensor([t]))
    k = run.model.conditional_classes
    labels = {"labels": torch.tensor([label if label is not None else 0])} if k else {}
    with run.lock:
        x = run.model.decode(z, **labels)
    return _png(to_uint8(x), nrow=1)


# ---------------------------------------------------------------- people's votes

RATE_SEED = 2019  # the order of real and fake images, the samples' noise, left and right: fixed by seeds
MAX_RATER = 64


@dataclass
class Rating:
    """What the Rate view has shown: the items served and not yet answered, and how many items each
    rater has seen of each protocol (their position in the fixed order)."""

    served: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def position(self, key: tuple) -> int:
        with self.lock:
            k = self.counters.get(key, 0)
            self.counters[key] = k + 1
            return k

    def serve(self, record: dict) -> str:
        item = secrets.token_hex(8)
        with self.lock:
            self.served[item] = record
        return item

    def take(self, item: str) -> dict:
        with self.lock:
            record = self.served.pop(item, None)
        if record is None:
            raise BadRequest("unknown item: the server did not serve it, or it was answered already; ask "
                             "GET /api/rate/next for an item")
        return record


def _data_url(image: torch.Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(make_grid(image[None], nrow=1, padding=0),
                                                                 scale=4)).decode()


def _coin(seed: int) -> bool:
    return bool(torch.randint(0, 2, (1,), generator=torch.Generator().manual_seed(seed)))


def _rater(params) -> str:
    rater = str(params.get("rater") or "")
    if not rater or len(rater) > MAX_RATER or not rater.replace("-", "").isalnum():
        raise BadRequest(f"give a rater id of letters, digits and dashes (at most {MAX_RATER}): ?rater=ID")
    return rater


def _one(run: LoadedRun, seed: int, label: int | None) -> torch.Tensor:
    labels = torch.tensor([label]) if label is not None else None
    with run.lock:
        return sample_from(run.model, 1, seed=seed, labels=labels)[0]


def next_item(runs: dict, rating: Rating, params) -> dict:
    """The next item of a rater's fixed sequence: for real or fake each pair of items holds one real
    held-out image and one sample, in a seeded order; for A or B, two runs' samples of one class from
    the same seed, left and right by a seeded coin."""
    protocol = params.get("protocol", "real-or-fake")
    if protocol not in PROTOCOLS:
        raise BadRequest(f"unknown protocol {protocol!r}; the protocols: {', '.join(PROTOCOLS)}")
    run, rater = _run(runs, params), _rater(params)
    if protocol == "prompt-match":
        return prompt_item(run, rating, rater)
    if protocol == "real-or-fake":
        k = rating.position((rater, protocol, run.name))
        pair, first_real = k // 2, _coin(RATE_SEED + k // 2)
        truth = "real" if (k % 2 == 0) == first_real else "fake"
        cls = run.model.conditional_classes
        if truth == "real":
            held = run.heldout()
            index = int(torch.randperm(len(held), generator=torch.Generator().manual_seed(RATE_SEED))[pair % len(held)])
            image, seed = held[index], None
        else:
            index, seed = pair, RATE_SEED + pair
            image = _one(run, seed, pair % cls if cls else None)
        record = {"protocol": protocol, "runs": [run.name], "truth": truth, "seed": seed, "index": index}
        return {"item": rating.serve(record), "protocol": protocol, "images": [_data_url(image)]}
    other = runs.get(params.get("other", ""))
    if other is None or other.name == run.name:
        raise BadRequest("A or B compares two runs: give ?other=NAME, another run of GET /api/runs", 404)
    k = rating.position((rater, protocol, run.name, other.name))
    ka, kb = run.model.conditional_classes, other.model.conditional_classes
    label = k % ka if ka and ka == kb else None
    seed = RATE_SEED + k
    pair = [(run, _one(run, seed, label)), (other, _one(other, seed, label))]
    if _coin(RATE_SEED + 7919 * k):
        pair.reverse()
    record = {"protocol": protocol, "runs": [pair[0][0].name, pair[1][0].name], "left": pair[0][0].name,
              "right": pair[1][0].name, "seed": seed, "index": k, "label": label}
    return {"item": rating.serve(record), "protocol": protocol, "images": [_data_url(img) for _, img in pair]}


def prompt_item(run: LoadedRun, rating: Rating, rater: str) -> dict:
    """Prompt matching: a held-out caption and two samples from the same seed, one drawn for that
    caption and one for another, left and right by a seeded coin; which one shows the prompt?"""
    if not getattr(run.model, "takes_text", False):
        raise BadRequest(f"run {run.name} was not trained on captions (--text): rate it with real-or-fake or a-or-b")
    captions = sorted(set(run.heldout_set().caption_texts()))
    if len(captions) < 2:
        raise BadRequest(f"dataset {run.meta.get('dataset')} has fewer than two held-out captions to match", 409)
    k = rating.position((rater, "prompt-match", run.name))
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(RATE_SEED)).tolist()
    prompt, decoy = captions[order[k % len(captions)]], captions[order[(k + 1) % len(captions)]]
    seed = RATE_SEED + k
    with run.lock:
        drawn = [sample_from(run.model, 1, seed=seed, labels=tokenize([text]))[0] for text in (prompt, decoy)]
    truth = "left"
    if _coin(RATE_SEED + 7919 * k):
        drawn.reverse()
        truth = "right"
    record = {"protocol": "prompt-match", "runs": [run.name], "prompt": prompt, "decoy": decoy, "truth": truth,
              "seed": seed, "index": k}
    return {"item": rating.serve(record), "protocol": "prompt-match", "prompt": prompt,
            "images": [_data_url(img) for img in drawn]}


def vote(runs: dict, rating: Rating, body) -> dict:
    """Record one answer: a line in each rated run's ratings.jsonl (fsynced); returns the scores."""
    if not isinstance(body, dict):
        raise BadRequest("the vote is a JSON object: {\"item\": ..., \"answer\": ..., \"rater\": ...}")
    rater = _rater(body)
    answer = body.get("answer")
    item = str(body.get("item", ""))
    record = rating.take(item)
    allowed = ("real", "fake") if record["protocol"] == "real-or-fake" else ("left", "right")  # A/B, prompts
    if answer not in allowed:
        with rating.lock:
            rating.served[item] = record  # a bad answer does not use up the item
        raise BadRequest(f"answer must be {' or '.join(allowed)}, got {answer!r}")
    line = {**record, "item": item, "answer": answer, "rater": rater,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
    if record["protocol"] == "a-or-b":
        line["chosen"] = record[answer]
    for name in record["runs"]:
        Run(runs[name].path).append_durably(Run.RATINGS, line)
    return {"recorded": True, "scores": {name: human_scores(Run(runs[name].path).read_lines(Run.RATINGS), name)
                                         for name in record["runs"]}}


def scores_of(run: LoadedRun) -> dict:
    return {"run": run.name, "scores": human_scores(Run(run.path).read_lines(Run.RATINGS), run.name)}


# ---------------------------------------------------------------- the app

def create_app(run_paths: list[str | Path], max_images: int = ServeOptions.max_images):
    """The FastAPI application serving `run_paths` (loaded now, so a bad folder fails at start)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    runs = load_runs(run_paths)
    app = FastAPI(title="genlab serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        if len(request.url.query.encode()) > MAX_QUERY:
            return JSONResponse({"detail": f"request too long: the query may hold {MAX_QUERY} bytes"}, 414)
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"request body too large: at most {MAX_BODY} bytes"}, 413)
        return await call_next(request)

    def answer(work):
        try:
            return Response(work(), media_type="image/png", headers={"Cache-Control": "no-store"})
        except BadRequest as err:
            return JSONResponse({"detail": str(err)}, err.status)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(PAGE.replace("__MAX__", str(max_images)))

    @app.get("/api/runs")
    def list_runs():
        return {"runs": [r.describe() for r in runs.values()], "max_images": max_images}

    @app.get("/api/generate.png")
    def generate(request: Request):
        params = request.query_params
        return answer(lambda: generate_png(_run(runs, params), params, max_images))

    @app.get("/api/interpolate.png")
    def interpolate(request: Request):
        params = request.query_params
        return answer(lambda: interpolate_png(_run(runs, params), params))

    rating = Rating()

    def answer_json(work):
        try:
            return JSONResponse(work(), headers={"Cache-Control": "no-store"})
        except BadRequest as err:
            return JSONResponse({"detail": str(err)}, err.status)

    @app.get("/api/rate/next")
    def rate_next(request: Request):
        return answer_json(lambda: next_item(runs, rating, request.query_params))

    @app.post("/api/rate/vote")
    async def rate_vote(request: Request):
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"detail": f"request body too large: at most {MAX_BODY} bytes"}, 413)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return JSONResponse({"detail": "the vote must be JSON: {\"item\", \"answer\", \"rater\"}"}, 400)
        return answer_json(lambda: vote(runs, rating, body))

    @app.get("/api/rate/scores")
    def rate_scores(request: Request):
        return answer_json(lambda: scores_of(_run(runs, request.query_params)))

    return app


def serve(run_paths: list[str | Path], host: str = ServeOptions.host, port: int = ServeOptions.port,
          max_images: int = ServeOptions.max_images) -> None:
    try:
        import uvicorn
    except ImportError:
        raise GenlabError("genlab serve needs FastAPI and uvicorn: pip install 'genlab[serve]'") from None
    app = create_app(run_paths, max_images)
    print(f"genlab serve: http://{host}:{port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>genlab serve</title>
<style>
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:1rem 2rem;color:#222}
fieldset{border:1px solid #ddd;margin:.6rem 0;padding:.5rem 1rem} label{margin-right:1rem;display:inline-block}
input[type=number]{width:6rem} #info{color:#555;font-size:.9rem} #error{color:#b00020;min-height:1.2rem}
img{image-rendering:pixelated;border:1px solid #eee;margin-top:.5rem} button{padding:.3rem 1rem}
</style></head><body>
<h1>genlab serve</h1>
<fieldset><legend>Run</legend><select id="run"></select><div id="info"></div></fieldset>
<fieldset><legend>Generate</legend>
<label>seed <input id="seed" type="number" min="0" value="0"></label>
<label>count <input id="count" type="number" min="1" max="__MAX__" value="16"></label>
<label id="label-box" hidden>class <select id="label"></select></label>
<label id="prompt-box" hidden>prompt <input id="prompt" size="40" maxlength="500" placeholder="red heart"></label>
<span id="options"></span>
<button id="generate">Generate</button> <a id="download" download="genlab-grid.png" href="#">download PNG</a>
<div id="error"></div><img id="grid" alt="generated grid">
</fieldset>
<fieldset id="rate"><legend>Rate: can people tell the samples from real images?</legend>
<label>protocol <select id="protocol"><option value="real-or-fake">real or fake (one image)</option>
<option value="a-or-b">A or B (two runs, same class)</option>
<option value="prompt-match">which image shows the prompt? (a text run)</option></select></label>
<label id="other-box" hidden>against <select id="other"></select></label>
<button id="rate-start">Start rating</button>
<div id="rate-prompt"></div><div id="rate-images"></div>
<div id="rate-buttons" hidden></div>
<div id="rate-score"></div>
</fieldset>
<fieldset id="interp-box"><legend>Interpolate between two seeds</legend>
<label>seed A <input id="seed-a" type="number" min="0" value="0"></label>
<label>seed B <input id="seed-b" type="number" min="0" value="1"></label>
<label>t <input id="t" type="range" min="0" max="1" step="0.05" value="0.5"> <span id="t-value">0.5</span></label>
<br><img id="frame" alt="interpolation frame">
</fieldset>
<script>
let runs = [];
const $ = id => document.getElementById(id);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
function current() { return runs.find(r => r.name === $("run").value); }
function query(extra) {
  const p = new URLSearchParams({run: $("run").value, ...extra});
  return p.toString();
}
function showRun() {
  const r = current();
  const m = Object.entries(r.metrics).map(([k, v]) => k + " " + Number(v).toPrecision(4) +
    (k in r.floors ? " (real data " + Number(r.floors[k]).toPrecision(4) + ")" : "")).join(", ");
  $("info").textContent = r.model + " on " + r.dataset + ", " + r.steps + " steps" + (m ? "; " + m : "");
  $("label-box").hidden = !r.conditional;
  $("prompt-box").hidden = !r.text;
  $("label").innerHTML = '<option value="">all classes</option>' +
    r.classes.map((c, i) => '<option value="' + i + '">' + i + ": " + esc(c) + "</option>").join("");
  $("options").innerHTML = Object.entries(r.options).map(([k, o]) =>
    '<label>' + esc(k) + ' <input class="opt" name="' + esc(k) + '" title="' + esc(o.help) + '" value="' +
    esc(o.default ?? "") + '" size="6"></label>').join("");
  $("interp-box").hidden = !r.interpolation;
}
async function show(img, url) {
  $("error").textContent = "";
  const res = await fetch(url);
  if (!res.ok) { $("error").textContent = (await res.json()).detail; return; }
  const blob = await res.blob();
  img.src = URL.createObjectURL(blob);
  return img.src;
}
async function generate() {
  const extra = {seed: $("seed").value, count: $("count").value};
  if (current().conditional && $("label").value !== "") extra.label = $("label").value;
  if (current().text) extra.prompt = $("prompt").value;
  document.querySelectorAll(".opt").forEach(i => { if (i.value !== "") extra[i.name] = i.value; });
  const src = await show($("grid"), "/api/generate.png?" + query(extra));
  if (src) $("download").href = src;
}
function frame() {
  $("t-value").textContent = $("t").value;
  if (!current().interpolation) return;
  const extra = {seed_a: $("seed-a").value, seed_b: $("seed-b").value, t: $("t").value};
  if (current().conditional && $("label").value !== "") extra.label = $("label").value;
  show($("frame"), "/api/interpolate.png?" + query(extra));
}
let rater = localStorage.getItem("genlab-rater");
if (!rater) { rater = "r" + Math.random().toString(36).slice(2, 12); localStorage.setItem("genlab-rater", rater); }
let item = null;
function pct(x) { return Math.round(100 * x) + "%"; }
function showScores(scores) {
  const lines = [];
  const names = {error_rate: "human error rate", fake_error_rate: "samples taken for real", preference: "preferred",
                 prompt_match: "image for its prompt chosen"};
  for (const [k, v] of Object.entries(scores)) {
    lines.push(names[k] + " " + pct(v.value) + " [" + pct(v.low) + ", " + pct(v.high) + "], " + v.votes + " votes");
  }
  $("rate-score").textContent = lines.join("; ");
}
async function nextItem() {
  $("error").textContent = "";
  const p = new URLSearchParams({run: $("run").value, protocol: $("protocol").value, rater: rater});
  if ($("protocol").value === "a-or-b") p.set("other", $("other").value);
  const res = await fetch("/api/rate/next?" + p.toString());
  const data = await res.json();
  if (!res.ok) { $("error").textContent = data.detail; return; }
  item = data.item;
  $("rate-prompt").textContent = data.prompt ? "prompt: " + data.prompt : "";
  $("rate-images").innerHTML = data.images.map((src, i) => '<img class="rate-image" src="' + src + '" alt="image ' + (i + 1) + '">').join(" ");
  const answers = data.protocol === "real-or-fake" ? ["real", "fake"] : ["left", "right"];
  $("rate-buttons").innerHTML = answers.map(a => '<button class="answer" data-answer="' + a + '">' + a + '</button>').join(" ");
  $("rate-buttons").hidden = false;
  document.querySelectorAll(".answer").forEach(b => b.onclick = () => answer(b.dataset.answer));
}
async function answer(value) {
  if (!item) return;  // one answer an item: the buttons wait for the next one
  const answered = item;
  item = null;
  $("rate-buttons").hidden = true;
  const res = await fetch("/api/rate/vote", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify({item: answered, answer: value, rater: rater})});
  const data = await res.json();
  if (!res.ok) { $("error").textContent = data.detail; return; }
  showScores(data.scores[$("run").value] || {});
  nextItem();
}
$("protocol").onchange = () => { $("other-box").hidden = $("protocol").value !== "a-or-b"; };
$("rate-start").onclick = nextItem;
fetch("/api/runs").then(r => r.json()).then(data => {
  runs = data.runs;
  $("run").innerHTML = runs.map(r => '<option>' + esc(r.name) + '</option>').join("");
  $("other").innerHTML = runs.map(r => '<option>' + esc(r.name) + '</option>').join("");
  if (runs.length > 1) $("other").value = runs[1].name;
  showRun(); frame();
  fetch("/api/rate/scores?run=" + encodeURIComponent($("run").value)).then(r => r.json()).then(d => showScores(d.scores || {}));
});
$("run").onchange = () => { showRun(); frame(); };
$("generate").onclick = generate;
["t", "seed-a", "seed-b"].forEach(id => $(id).oninput = frame);
</script></body></html>
"""
