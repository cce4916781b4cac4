"""The accuracy plots (matplotlib, Agg backend): small PNGs committed under docs/accuracy/."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def reliability_diagram(scores: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for name in ("logistic", "normal"):
        rows = scores[name]["reliability"]
        ax.plot(
            [r["predicted"] for r in rows],
            [r["observed"] for r in rows],
            marker="o",
            label=f"{name} (Brier {scores[name]['brier']:.4f})",
        )
    ax.set(
        xlabel="predicted P(same person)",
        ylabel="observed fraction same person",
        title="LFW pairs, cross-fitted over 10 folds",
    )
    ax.legend(loc="upper left")
    _save(fig, path)


def p_same_curves(xs: np.ndarray, curves: dict[int, list[float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, ys in curves.items():
        ax.plot(xs, ys, label=f"N = {n:,} rows")
    ax.axhline(0.5, color="grey", lw=1, ls=":")
    ax.set(
        xlabel="distance of the best match",
        ylabel="P(best match is the same person)",
        title="Gallery-size correction (prior 0.5 that the visitor is enrolled)",
    )
    ax.legend()
    _save(fig, path)


def distance_histograms(genuine: np.ndarray, impostor_pairs: np.ndarray, impostor_all: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1.3, 131)
    ax.hist(genuine, bins, density=True, alpha=0.6, label="same person (pairs.txt)")
    ax.hist(impostor_pairs, bins, density=True, alpha=0.6, label="different (pairs.txt)")
    ax.hist(impostor_all, bins, density=True, histtype="step", color="k", label="different (all photo pairs)")
    ax.set_yscale("log")
    ax.set(xlabel="descriptor distance", ylabel="density (log)", title="LFW distances")
    ax.legend()
    _save(fig, path)


def identification(sizes: list[int], rank1: list[float], rank5: list[float], synthetic_from: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [100 * v for v in rank1], marker="o", label="rank-1")
    ax.plot(sizes, [100 * v for v in rank5], marker="s", label="rank-5")
    ax.set_xscale("log")
    if synthetic_from:
        ax.axvspan(synthetic_from, max(sizes) * 1.5, color="orange", alpha=0.12, label="synthetic distractors")
    ax.set(xlabel="gallery rows (1 per real person)", ylabel="% of probes", title="LFW identification vs gallery size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, path)


def verdict_reliability(series: dict[str, list[dict]], sizes: list[int], path: Path) -> None:
    """Predicted p_same against the observed share right, one panel per prior, one line per gallery size."""
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4.6), squeeze=False)
    for ax, (title, per_size) in zip(axes[0], series.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
        for n, rel in zip(sizes, per_size, strict=True):
            bins = [b for b in rel["bins"] if b["strangers"] + b["enrolled"] >= 20]
            ax.plot(
                [b["predicted"] for b in bins],
                [b["observed"] for b in bins],
                marker="o",
                ms=3,
                label=f"{n:,} rows (Brier {rel['brier']:.3f})",
            )
        ax.set(xlabel="predicted p_same of the best match", ylabel="observed share: the visitor", title=title)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle("Neighbourhood verdict model, LFW, cross-fitted over identity folds (bins of >= 20 queries)")
    _save(fig, path)


def stranger_rates(rows: list[dict], path: Path) -> None:
    """Share of strangers told "likely you" against gallery size: before and after, everyone and the packed tenth."""
    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    sizes = [r["gallery_rows"] for r in rows]
    for key, label, colour in (
        ("before", "before (per-distance model, prior 0.5)", "tab:red"),
        ("after_demo", "after, demo prior", "tab:blue"),
        ("after_kiosk", "after, kiosk prior", "tab:green"),
    ):
        for group, style, marker in (("all", "-", "o"), ("packed", "--", "s")):
            ax.plot(
                sizes,
                [100 * r[key][f"strangers_likely_you_{group}"] for r in rows],
                ls=style,
                color=colour,
                marker=marker,
                ms=4,
                label=f"{label}: {'everyone' if group == 'all' else 'packed tenth'}",
            )
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, 100)
    ax.set(xlabel="gallery rows", ylabel='% of strangers told "likely you"', title="Leave-identity-out strangers, LFW")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    _save(fig, path)


def lookalike_counts(table, sizes: dict[str, tuple[int, float]], path: Path) -> None:
    """People expected at least as close as a distance, by chance, per dataset (low, typical and high face)."""
    from index import lookalikes

    d = np.linspace(0.3, 0.75, 91)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, (people, photos)), colour in zip(sizes.items(), ("C0", "C1", "C2", "C3"), strict=False):
        e = [lookalikes.expected(table, float(v), people, photos) for v in d]
        ax.plot(d, [x.typical for x in e], color=colour, label=f"{name}: typical face")
        ax.fill_between(d, [x.low for x in e], [x.high for x in e], color=colour, alpha=0.15)
    ax.axhline(1, color="grey", lw=1, ls=":")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1e6)
    low, _, high = table.percentiles
    ax.set(
        xlabel="distance of the best match",
        ylabel="people expected at least this close",
        title=f"Look-alikes by chance (band: percentiles {low:g} to {high:g} of faces)",
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
