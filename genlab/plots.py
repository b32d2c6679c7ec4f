"""Curves of a run, drawn with matplotlib (Agg: no display needed): the losses of log.jsonl, the
metrics of metrics.jsonl, and quality against training time for a comparison."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Losses (keys starting with `loss`) in one panel; other logged values, such as the GAN's
    D(x) and D(G(z)), in a second one; both against the optimisation step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "epoch", "images", "time", "img_per_s"}
    keys = [k for k in (history[0] if history else {}) if k not in skip]
    losses = [k for k in keys if k.startswith("loss")]
    others = [k for k in keys if k not in losses]
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4), squeeze=False)
    steps = [h["step"] for h in history]
    labels = {"d_real": "D(x)", "d_fake": "D(G(z))", "loss_d": "L_D", "loss_g": "L_G"}
    for ax, panel in zip(axes[0], panels):
        for k in panel:
            ax.plot(steps, [h[k] for h in history], label=labels.get(k, k), linewidth=1)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0][0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_history(history: list[dict], path: str | Path) -> None:
    """FID (left) and precision/recall/coverage (right) against the step, from metrics.jsonl."""
    plt = _pyplot()
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(steps, [h.get("fid") for h in history], marker="o", label="FID")
    left.set_yscale("log")
    for key in ("precision", "recall", "coverage"):
        if key in history[0]:
            right.plot(steps, [h[key] for h in history], marker="o", label=key)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_quality_vs_time(rows: list[dict], path: str | Path) -> None:
    """Each run's FID against its minutes of training (log scale), labelled by run; runs scored in
    different feature spaces (rows' optional "space") in different colours, named in a legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    spaces = list(dict.fromkeys(r.get("space") for r in rows))
    for i, name in enumerate(spaces):
        group = [r for r in rows if r.get("space") == name]
        ax.scatter([r["minutes"] for r in group], [r["fid"] for r in group], s=40, color=f"C{i % 10}",
                   label=f"scored in {name}" if len(spaces) > 1 else None)
    middle = (min(r["minutes"] for r in rows) + max(r["minutes"] for r in rows)) / 2
    for r in rows:  # labels left out of the layout (long run names must not squeeze the axes), and
        right = r["minutes"] > middle  # written towards the middle, so that they stay on the figure
        ax.annotate(f"{r['run']} ({r['model']})", (r["minutes"], r["fid"]), fontsize=8,
                    xytext=(-4 if right else 4, 4), textcoords="offset points",
                    ha="right" if right else "left").set_in_layout(False)
    ax.margins(x=0.2, y=0.1)
    if len(spaces) > 1:
        ax.legend(fontsize=8, title="FID ranks only within one colour", title_fontsize=8,
                  loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
