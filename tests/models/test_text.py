"""Prompts (text-to-image): the byte tokenizer, captions read from data, a U-Net conditioned on text
through cross-attention, classifier-free guidance on text and negative prompts, and the bad input
of each, through the command line."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.cli import main
from genlab.config import DataConfig
from genlab.data import load_dataset
from genlab.data.emoji import caption
from genlab.errors import GenlabError
from genlab.models.text import CONTEXT, START, PromptTooLong, detokenize, tokenize

TINY = ["--limit", "64", "--batch-size", "16", "--no-progress", "--device", "cpu", "--grid-size", "4"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def shapes_folder(root, captions="jsonl", n=24):
    """Coloured squares and circles on white with captions such as "red square"."""
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        colour, shape = list(COLOURS)[i % 3], ("square", "circle")[(i // 3) % 2]
        img = Image.new("RGB", (28, 28), "white")
        from PIL import ImageDraw

        draw = ImageDraw.Draw(img)
        box = (6 + i % 4, 6, 21 + i % 4, 21)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
        img.save(root / f"{i:03d}.png")
        text = f"{colour} {shape}"
        if captions == "jsonl":
            lines.append(json.dumps({"file_name": f"{i:03d}.png", "text": text}))
        else:
            (root / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    if lines:
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_tokenizer_round_trip_unknown_words_and_the_context():
    prompts = ["Red  Heart", "naïve 🙂 zyzzyva", ""]
    ids = tokenize(prompts)
    assert ids.shape == (3, CONTEXT) and (ids[:, 0] == START).all()
    assert detokenize(ids) == ["red heart", "naïve 🙂 zyzzyva", ""]  # bytes: no word is unknown
    assert (ids[2, 1:] == 0).all()  # the empty prompt: the start token alone
    with pytest.warns(PromptTooLong, match=f"context of {CONTEXT - 1} bytes"):
        long = tokenize(["x" * 200])
    assert detokenize(long) == ["x" * (CONTEXT - 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(["short"])  # no warning below the limit


def test_captions_from_metadata_jsonl_sidecars_and_class_templates(tmp_path):
    for kind in ("jsonl", "txt"):
        folder = shapes_folder(tmp_path / kind, captions=kind)
        data = load_dataset(DataConfig(dataset="folder", data_dir=str(folder)))
        assert data.captions is not None and len(data.captions) == len(data) == 20  # a fifth held out
        assert set(data.captions) <= {f"{c} {s}" for c in COLOURS for s in ("square", "circle")}
        test = load_dataset(DataConfig(dataset="folder", data_dir=str(folder), split="test"))
        assert len(test.captions) == 4  # the caption split follows the image split
    digits = load_dataset(DataConfig(dataset="mnist-sample", limit=5))
    assert digits.captions is None
    assert digits.caption_texts() == [f"a photo of a {digits.class_names[int(c)]}" for c in digits.labels]
    assert caption("THUMBS UP SIGN") == "thumbs up sign"
    assert caption("THUMBS UP SIGN", "1F3FF") == "thumbs up sign, dark skin tone"
    assert caption("COUPLE WITH HEART", "1F3FB-1F3FF") == "couple with heart, light and dark skin tone"


@pytest.mark.parametrize("write, message", [
    (lambda f: (f / "metadata.jsonl").write_text('{"file_name": "000.png", "text": "red square"}\nnot json\n'),
     "metadata.jsonl line 2 is not JSON"),
    (lambda f: (f / "metadata.jsonl").write_text('{"file_name": "nope.png", "text": "red square"}\n'),
     "line 1 names 'nope.png', which is not in"),
    (lambda f: (f / "000.txt").write_bytes(b"caf\xe9 au lait"), "is not UTF-8"),
])
def test_bad_captions_are_refused_in_one_line(tmp_path, capsys, write, message):
    folder = shapes_folder(tmp_path / "f", captions="txt")
    write(folder)
    with pytest.raises(GenlabError, match=message):
        load_dataset(DataConfig(dataset="folder", data_dir=str(folder)))
    assert main(["train", "--model", "diffusion", "--text", "--dataset", "folder", "--data-dir", str(folder),
                 "--steps", "1", "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert message.split(" ")[0] in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny pixel diffusion model trained on captioned coloured shapes."""
    root = tmp_path_factory.mktemp("text")
    folder = shapes_folder(root / "shapes")
    run = root / "run"
    assert main(["train", "--model", "diffusion", "--text", "--width", "8", "--timesteps", "20", "--sample-steps",
                 "4", "--dataset", "folder", "--data-dir", str(folder), "--steps", "6", "--out", str(run),
                 *TINY]) == 0
    return run


def test_prompts_change_the_samples_and_guidance_0_is_the_unconditional_model(text_run):
    import genlab

    model = genlab.load(text_run)
    red = model.sample(4, seed=1, prompt="red square", guidance=3.0)
    blue = model.sample(4, seed=1, prompt="blue circle", guidance=3.0)
    assert red.shape == (4, 3, 28, 28) and not torch.equal(red, blue)  # same noise, another prompt
    assert torch.equal(red, model.sample(4, seed=1, prompt="red square", guidance=3.0))  # deterministic
    uncond = model.sample(4, seed=1, prompt="")
    assert torch.equal(model.sample(4, seed=1, prompt="red square", guidance=0.0), uncond)
    assert torch.equal(model.sample(4, seed=1), uncond)  # no prompt: the empty one
    negative = model.sample(4, seed=1, prompt="red square", guidance=3.0, negative_prompt="blue circle")
    assert not torch.equal(negative, red)  # guidance steers away from the negative prompt instead
    assert torch.equal(model.sample(4, seed=1, prompt="red square", guidance=0.0, negative_prompt="blue circle"),
                       model.sample(4, seed=1, prompt="blue circle"))  # s = 0: the negative prompt's model


def test_sample_command_prompts_and_their_bad_input(text_run, tmp_path, capsys):
    assert main(["sample", str(text_run), "--prompt", "green circle", "--n", "3", "--out", str(tmp_path / "a.npz"),
                 "--negative-prompt", "red"]) == 0
    saved = np.load(tmp_path / "a.npz")
    assert saved["images"].shape == (3, 3, 28, 28) and list(saved["prompts"]) == ["green circle"] * 3
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("red square\n\nblue circle\n", encoding="utf-8")
    assert main(["sample", str(text_run), "--prompts", str(prompts), "--n", "3", "--out", str(tmp_path / "png")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "png" / "metadata.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == ["red square", "blue circle", "red square"]
    assert load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "png"))).captions is not None
    capsys.readouterr()
    bad = [(["--prompts", str(tmp_path / "missing.txt")], "does not exist"),
           (["--prompts", str(tmp_path / "empty.txt")], "holds no prompts"),
           (["--labels", "1"], "--prompt"),
           (["--prompt", "x", "--prompts", str(prompts)], "pass one")]
    (tmp_path / "empty.txt").write_text("\n \n")
    for extra, message in bad:
        assert main(["sample", str(text_run), "--n", "2", "--out", str(tmp_path / "x.npz"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (extra, err)


def test_a_prompt_for_a_run_trained_without_text_names_the_flag(tmp_path, capsys):
    run = tmp_path / "plain"
    assert main(["train", "--model", "diffusion", "--width", "8", "--timesteps", "20", "--sample-steps", "2",
                 "--steps", "2", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "a photo of a 3", "--n", "1", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--text" in err and len(err.splitlines()) == 1
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "x.npz"), "--negative-prompt", "x"]) == 2
    assert "--text" in capsys.readouterr().err
    assert main(["train", "--model", "flow", "--text", "--conditional", "--steps", "1", "--out",
                 str(tmp_path / "both"), *TINY]) == 2
    assert "choose one" in capsys.readouterr().err


@pytest.mark.parametrize("model, extra", [
    ("diffusion", ["--timesteps", "20", "--sample-steps", "3"]),
    ("latent-flow", ["--sample-steps", "2", "--first-stage-width", "16", "--first-stage-steps", "20"]),
])
def test_text_models_resume_to_the_same_bits(tmp_path, model, extra):
    from tests.test_families import flat_state

    common = ["--model", model, "--text", "--width", "8", *extra, *TINY, "--checkpoint-every", "100"]
    assert main(["train", "--steps", "8", "--out", str(tmp_path / "whole"), *common]) == 0
    assert main(["train", "--steps", "3", "--out", str(tmp_path / "split"), *common]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--steps", "8"]) == 0
    whole, split = flat_state(tmp_path / "whole"), flat_state(tmp_path / "split")
    assert whole.keys() == split.keys() and any("text" in k for k in whole)
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_serve_has_a_prompt_box_and_caps_the_prompt(text_run, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from genlab.serve import MAX_PROMPT, create_app

    client = TestClient(create_app([text_run]))
    name = text_run.name
    assert client.get("/api/runs").json()["runs"][0]["text"] is True
    assert 'id="prompt"' in client.get("/").text
    red = client.get("/api/generate.png", params={"run": name, "prompt": "red square", "count": 2, "guidance": 3})
    blue = client.get("/api/generate.png", params={"run": name, "prompt": "blue circle", "count": 2, "guidance": 3})
    assert red.status_code == 200 and red.headers["content-type"] == "image/png" and red.content != blue.content
    long = client.get("/api/generate.png", params={"run": name, "prompt": "x" * (MAX_PROMPT + 1)})
    assert long.status_code == 413 and "at most" in long.json()["detail"]
    negative = client.get("/api/generate.png", params={"run": name, "negative_prompt": "y" * (MAX_PROMPT + 1)})
    assert negative.status_code == 413


def test_the_text_image_scorer_ranks_matching_pairs_above_shuffled_ones(tmp_path):
    from genlab.metrics.clip import ClipRecipe, text_image_scores, train_clip

    folder = shapes_folder(tmp_path / "shapes", n=60)
    data = load_dataset(DataConfig(dataset="folder", data_dir=str(folder)))
    scorer = train_clip(data, ClipRecipe(steps=150, batch_size=32, width=8, dim=32), log=lambda *_: None)
    captions = data.caption_texts()
    shuffled = captions[1:] + captions[:1]  # each image beside its neighbour's caption, always another
    pool = sorted(set(captions))
    right = text_image_scores(scorer, data.images, captions, pool)
    wrong = text_image_scores(scorer, data.images, shuffled, pool)
    assert right["ranked_among"] == 6  # 6 distinct captions: 5 rivals each
    assert right["clip_score"] > wrong["clip_score"] + 10
    assert right["r_precision"] > 0.6 > 1 / 6 > wrong["r_precision"]


def test_eval_of_a_text_run_reports_clip_score_and_r_precision_beside_floors(tmp_path, small_extractor, monkeypatch):
    import functools

    from genlab.metrics import clip

    monkeypatch.setattr(clip, "get_scorer", functools.partial(clip.get_scorer, recipe=clip.ClipRecipe(
        steps=20, batch_size=16, width=8, dim=16)))
    run = tmp_path / "digits"
    assert main(["train", "--model", "diffusion", "--text", "--width", "8", "--timesteps", "20", "--sample-steps",
                 "2", "--steps", "3", "--out", str(run), *TINY]) == 0
    assert main(["eval", str(run), "--n", "40", "--features", str(small_extractor.path), "--json",
                 str(tmp_path / "e.json")]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    for name in ("clip_score", "r_precision", "r_precision_unconditional"):
        assert metrics[name]["value"] is not None and metrics[name]["floor"] is not None
    assert metrics["r_precision_unconditional"]["floor"] == pytest.approx(1 / 10)  # 10 digit captions


def test_eval_scores_composition_on_a_datasets_held_out_combinations(tmp_path, small_extractor, monkeypatch):
    import dataclasses
    import functools

    from genlab.data import DATASETS
    from genlab.metrics import clip

    monkeypatch.setattr(clip, "get_scorer", functools.partial(clip.get_scorer, recipe=clip.ClipRecipe(
        steps=20, batch_size=16, width=8, dim=16)))
    run = tmp_path / "digits"
    assert main(["train", "--model", "flow", "--text", "--width", "8", "--sample-steps", "2", "--steps", "3",
                 "--out", str(run), *TINY]) == 0
    picked = []

    def combinations(train, heldout):  # as emoji's: held-out images whose captions' parts were trained on
        picked.append(heldout.subset(24))
        return picked[-1]
    entry = DATASETS["mnist-sample"]
    monkeypatch.setitem(DATASETS, "mnist-sample", dataclasses.replace(entry, combinations=combinations))
    assert main(["eval", str(run), "--n", "40", "--features", str(small_extractor.path), "--json",
                 str(tmp_path / "e.json")]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert picked and all(len(p) == 24 for p in picked)
    for name in ("clip_score_combinations", "r_precision_combinations"):
        assert metrics[name]["value"] is not None and metrics[name]["floor"] is not None


def test_serve_rates_prompt_image_pairs(text_run, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from genlab.serve import create_app

    client = TestClient(create_app([text_run]))
    name = text_run.name
    params = {"run": name, "protocol": "prompt-match", "rater": "r1"}
    first = client.get("/api/rate/next", params=params).json()
    assert first["prompt"] in {f"{c} {s}" for c in COLOURS for s in ("square", "circle")} and len(first["images"]) == 2
    assert first["images"][0] != first["images"][1]  # the same seed, drawn for two prompts
    assert client.post("/api/rate/vote", json={"item": first["item"], "answer": "left", "rater": "r1"}).status_code == 200
    second = client.get("/api/rate/next", params=params).json()
    assert second["prompt"] != first["prompt"] or second["images"] != first["images"]  # the rater's next item
    client.post("/api/rate/vote", json={"item": second["item"], "answer": "right", "rater": "r1"})
    votes = [json.loads(line) for line in (text_run / "ratings.jsonl").read_text().splitlines()]
    assert [v["protocol"] for v in votes] == ["prompt-match"] * 2 and all(v["truth"] in ("left", "right") for v in votes)
    scores = client.get("/api/rate/scores", params={"run": name}).json()["scores"]["prompt_match"]
    right = sum(v["answer"] == v["truth"] for v in votes)
    assert scores["votes"] == 2 and scores["value"] == right / 2
    (text_run / "ratings.jsonl").unlink()  # the module's other tests see the run unrated
    bad = client.post("/api/rate/vote", json={"item": client.get("/api/rate/next", params=params).json()["item"],
                                              "answer": "real", "rater": "r1"})
    assert bad.status_code == 400 and "left or right" in bad.json()["detail"]


def test_a_text_runs_grids_and_card_show_example_prompts(text_run):
    prompts = json.loads((text_run / "samples" / "prompts.json").read_text())
    captions = set(load_dataset(DataConfig(dataset="folder", data_dir=str(text_run.parent / "shapes"))).caption_texts())
    assert 2 <= len(prompts) == len(set(prompts)) <= 4 and set(prompts) <= captions
    card = (text_run / "README.md").read_text()
    assert all(f"`{p}`" in card for p in prompts) and f"prompt={prompts[0]!r}" in card
    shown = re.search(r"!\[samples\]\((samples/[\w.]+)\)", card).group(1)  # the grid the card shows
    grid = np.asarray(Image.open(text_run / shown))
    rows = grid.shape[0] // (2 * (28 + 2))  # 2x scale, 28 px images with 2 px padding
    assert rows == len(prompts)  # one row a prompt


LATENT_TRANSFORMER = ["--model", "latent-transformer", "--text", "--label-dropout", "0.2", "--d-model", "16",
                      "--layers", "1", "--heads", "2", "--codebook-size", "32", "--first-stage-width", "16",
                      "--first-stage-steps", "20", *TINY, "--checkpoint-every", "100"]


def test_the_latent_transformer_reads_a_prompt_as_a_prefix(tmp_path):
    import genlab
    from tests.test_families import flat_state

    folder = shapes_folder(tmp_path / "shapes")
    data = ["--dataset", "folder", "--data-dir", str(folder)]
    assert main(["train", *LATENT_TRANSFORMER, *data, "--steps", "8", "--out", str(tmp_path / "whole")]) == 0
    model = genlab.load(tmp_path / "whole")
    red = model.sample(4, seed=1, prompt="red square", guidance=2.0)
    assert not torch.equal(red, model.sample(4, seed=1, prompt="blue circle", guidance=2.0))
    assert torch.equal(model.sample(4, seed=1, prompt="red square", guidance=0.0), model.sample(4, seed=1, prompt=""))
    assert not torch.equal(model.sample(4, seed=1, prompt="red square", guidance=2.0, negative_prompt="blue circle"),
                           red)
    family, ids = model.family, tokenize(["red square", "green circle", ""])
    cached, recomputed = (family.generate(3, ids, torch.Generator().manual_seed(0), cache=c, guidance=2.0)
                          for c in (True, False))
    assert torch.equal(cached, recomputed)  # the primed cache holds what the prefix computes
    images = load_dataset(DataConfig(dataset="folder", data_dir=str(folder))).images[:4]
    own, other = (family.log_likelihood(images, tokenize([p] * 4)) for p in ("red square", "blue circle"))
    assert not torch.equal(own, other)  # the prompt conditions the likelihood too
    # resumed from step 3 to 8: the same bits as one session of 8 steps
    assert main(["train", *LATENT_TRANSFORMER, *data, "--steps", "3", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--steps", "8"]) == 0
    whole, split = flat_state(tmp_path / "whole"), flat_state(tmp_path / "split")
    assert whole.keys() == split.keys() and any(".text." in k for k in whole)
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_ranked_first_among_rivals_of_the_same_subject(tmp_path):
    from genlab.metrics.clip import ClipRecipe, ranked_first, train_clip

    folder = shapes_folder(tmp_path / "shapes", n=60)
    data = load_dataset(DataConfig(dataset="folder", data_dir=str(folder)))
    scorer = train_clip(data, ClipRecipe(steps=150, batch_size=32, width=8, dim=32), log=lambda *_: None)
    captions = data.caption_texts()
    # rivals: the same shape in the other two colours (chance 1/3), and none for the first image
    rivals = [[] if i == 0 else [f"{c} {text.split()[1]}" for c in COLOURS if c != text.split()[0]]
              for i, text in enumerate(captions)]
    right = ranked_first(scorer, data.images, captions, rivals)
    assert right["n"] == len(captions) - 1 and right["chance"] == pytest.approx(1 / 3)
    assert right["share"] > 0.6
    wrong = ranked_first(scorer, data.images, [r[0] if r else c for r, c in zip(rivals, captions)],
                         [[c, r[1]] if r else [] for r, c in zip(rivals, captions)])
    assert wrong["share"] < 1 / 3  # another colour's caption is not ranked above the right one
    assert ranked_first(scorer, data.images[:2], captions[:2], [[], []])["share"] is None
