"""People looking at samples: the scores of the votes `genlab serve` collects (RUN/ratings.jsonl).

- real or fake (HYPE-infinity style, Zhou et al. NeurIPS 2019, arXiv:1904.01121): one image at a
  time, half real held-out images and half samples; the human error rate is the share of wrong
  answers (50 % = people cannot tell them apart), beside the error rate on fakes alone (the share of
  samples taken for real);
- A or B: two runs' samples of the same class side by side; a run's preference share is how often
  it was picked as the more realistic;
- prompt matching (a text run): a held-out caption above two samples from the same seed, one drawn
  for that caption and one for another; the share of votes for the right one is how well the
  samples follow their prompts as people judge it (50 % = not at all).

Each comes with a bootstrap 95 % interval (2,000 resamples of the votes, a fixed seed) and the
number of votes.
"""

from __future__ import annotations

import torch

PROTOCOLS = ("real-or-fake", "a-or-b", "prompt-match")
BOOTSTRAP, CONFIDENCE = 2000, 0.95


def bootstrap_interval(outcomes: list[float], resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """The central 95 % interval of the mean of `outcomes` (0/1 values) over bootstrap resamples."""
    x = torch.tensor(outcomes, dtype=torch.float64)
    idx = torch.randint(0, len(x), (resamples, len(x)), generator=torch.Generator().manual_seed(seed))
    means = x[idx].mean(1)
    tail = (1 - CONFIDENCE) / 2
    return float(torch.quantile(means, tail)), float(torch.quantile(means, 1 - tail))


def share(outcomes: list[float]) -> dict | None:
    if not outcomes:
        return None
    low, high = bootstrap_interval(outcomes)
    return {"value": sum(outcomes) / len(outcomes), "low": low, "high": high, "votes": len(outcomes)}


def human_scores(ratings: list[dict], run_name: str) -> dict:
    """{"error_rate", "fake_error_rate", "preference", "prompt_match"} (each value, 95 % interval, votes; absent
    without votes) from a run's ratings."""
    rof = [r for r in ratings if r.get("protocol") == "real-or-fake"]
    wrong = [float(r["answer"] != r["truth"]) for r in rof]
    fakes_taken_for_real = [float(r["answer"] == "real") for r in rof if r["truth"] == "fake"]
    ab = [r for r in ratings if r.get("protocol") == "a-or-b"]
    preferred = [float(r["chosen"] == run_name) for r in ab]
    matched = [float(r["answer"] == r["truth"]) for r in ratings if r.get("protocol") == "prompt-match"]
    out = {"error_rate": share(wrong), "fake_error_rate": share(fakes_taken_for_real), "preference": share(preferred),
           "prompt_match": share(matched)}
    return {k: v for k, v in out.items() if v is not None}


def describe(scores: dict) -> list[tuple[str, str]]:
    """(name, "value [low, high], N votes") lines for tables."""
    names = {"error_rate": "human error rate (real or fake; 50 % = indistinguishable)",
             "fake_error_rate": "samples taken for real", "preference": "preferred in A/B",
             "prompt_match": "image for its prompt chosen (2 images; 50 % = prompts not followed)"}
    return [(names[k], f"{v['value']:.0%} [{v['low']:.0%}, {v['high']:.0%}], {v['votes']} votes")
            for k, v in scores.items()]
