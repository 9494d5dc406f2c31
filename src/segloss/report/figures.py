"""The report's figures (seaborn): each function takes tables and returns a Figure, nothing else.

Error bars are the same 95 % t-interval over seeds as the tables (``tables.mean_ci``).
Figures are built without pyplot (no global state, no display needed) and laid out tightly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scikit_posthocs as sp
import seaborn as sns
from matplotlib.figure import Figure

from segloss.data.prepared import PreparedSplit
from segloss.report.tables import METRICS, mean_ci

sns.set_theme(style="whitegrid", context="notebook")
MEANS_SHOWN = ("dice_per_image", "dice_tumour_slices", "dice_per_patient", "dice_pooled", "iou")


def metric_means(per_model: pd.DataFrame, losses: list[str]) -> Figure:
    """Mean over seeds of the overlap metrics per loss, with 95 % CIs."""
    labels = {column: label for column, label, _ in METRICS}
    long = per_model.melt(id_vars=["loss", "seed"], value_vars=list(MEANS_SHOWN))
    long["metric"] = long["variable"].map(labels)
    fig = _figure(9, 4.2)
    ax = fig.subplots()
    sns.barplot(
        data=long, y="metric", x="value", hue="loss", hue_order=losses, errorbar=mean_ci, ax=ax
    )
    ax.set(xlim=(0, 1), xlabel="mean over seeds (95 % CI)", ylabel="")
    # Outside the axes: inside, the legend covered the bars of the lowest metric.
    ax.legend(title="loss", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def model_spread(values: pd.DataFrame, groups: list[str], threshold: float) -> Figure:
    """One dot per model (``value``: its per-patient Dice) per ``group``, with the median and
    quartiles, and the collapse threshold: what one training run may give."""
    fig = _figure(7, 0.5 + 0.55 * len(groups))
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # vertical jitter only, so the dots do not hide each other
    for row, group in enumerate(groups):
        x = values.loc[values["group"] == group, "value"].to_numpy(float)
        ax.scatter(x, row + rng.uniform(-0.15, 0.15, len(x)), s=14, alpha=0.7, color="C0")
        q1, median, q3 = np.nanpercentile(x, [25, 50, 75])
        ax.plot([q1, q3], [row, row], color="black", lw=3, alpha=0.5)
        ax.plot([median], [row], marker="|", color="black", ms=16, mew=2)
    ax.axvline(threshold, color="grey", ls=":", lw=1)
    ax.set(
        yticks=range(len(groups)),
        yticklabels=groups,
        xlim=(0, 1),
        ylim=(-0.6, len(groups) - 0.4),
        xlabel="per-patient Dice of one model (its test patients)",
    )
    ax.invert_yaxis()
    return fig


def paired(scores: pd.DataFrame, baseline: str, candidate: str, metric: str) -> Figure:
    """Candidate against baseline per test patient: the point is the mean over seeds, the
    bars the range over seeds; above the diagonal the candidate scores higher."""
    wide = scores[scores["loss"].isin([baseline, candidate])].pivot_table(
        index="patient", columns="loss", values="value", aggfunc=["mean", "min", "max"]
    )
    fig = _figure(5.5, 5.5)
    ax = fig.subplots()
    x, y = wide["mean"][baseline], wide["mean"][candidate]
    ax.errorbar(
        x,
        y,
        xerr=[x - wide["min"][baseline], wide["max"][baseline] - x],
        yerr=[y - wide["min"][candidate], wide["max"][candidate] - y],
        fmt="o",
        color="C0",
        ecolor="0.6",
        elinewidth=1,
        capsize=2,
    )
    low = min(0.0, float(scores["value"].min()))
    high = max(1.0, float(scores["value"].max()))
    ax.plot([low, high], [low, high], color="0.4", linestyle="--", label="y = x (no difference)")
    ax.set(
        xlim=(low, high),
        ylim=(low, high),
        aspect="equal",
        xlabel=f"{baseline}: {metric} (mean over seeds, bars = range)",
        ylabel=f"{candidate}: {metric}",
    )
    ax.legend(loc="lower right", fontsize="small")
    return fig


def critical_difference(friedman: dict, alpha: float, labels: dict[str, str]) -> Figure:
    """Mean ranks of every loss (1 = best, named by ``labels``); a bar joins losses the
    Holm-corrected pairwise Wilcoxon tests do not separate at ``alpha`` (scikit-posthocs'
    diagram)."""
    ranks = pd.Series(friedman["mean_ranks"]).rename(index=labels)
    sig = pd.DataFrame(1.0, index=ranks.index, columns=ranks.index)
    for pair in friedman["posthoc"]:
        p = 1.0 if pair["p_holm"] is None else pair["p_holm"]
        a, b = labels[pair["a"]], labels[pair["b"]]
        sig.loc[a, b] = sig.loc[b, a] = p
    fig = _figure(7, 2.2 + 0.25 * len(ranks))
    ax = fig.subplots()
    sp.critical_difference_diagram(ranks, sig, alpha=alpha, ax=ax)
    ax.set_title(
        f"Mean rank per loss (Friedman p = {friedman['p_value']:.3g}); "
        f"bars: not separated at alpha {alpha:g} (Holm)",
        fontsize=9,
    )
    return fig


def dice_distributions(per_image: pd.DataFrame, losses: list[str]) -> Figure:
    """Per-slice Dice per loss (all seeds), tumour slices and tumour-free slices apart."""
    frame = per_image.assign(
        slices=np.where(per_image["gt_pixels"] > 0, "tumour slices", "tumour-free slices")
    )
    fig = _figure(8, 4)
    ax = fig.subplots()
    sns.boxplot(
        data=frame, x="loss", y="dice", hue="slices", order=losses, fliersize=0, ax=ax, width=0.6
    )
    sns.stripplot(
        data=frame,
        x="loss",
        y="dice",
        hue="slices",
        order=losses,
        dodge=True,
        size=2,
        alpha=0.4,
        palette="dark:0.2",
        legend=False,
        ax=ax,
    )
    ax.set(ylim=(-0.02, 1.02), ylabel="Dice per slice", xlabel="")
    return fig


def learning_curves(curves: pd.DataFrame, losses: list[str]) -> Figure:
    """Validation Dice per epoch, one line per loss (mean over seeds), band = seed range."""
    fig = _figure(8, 4)
    ax = fig.subplots()
    if not curves.empty and "val_dice" in curves:
        sns.lineplot(
            data=curves.dropna(subset=["val_dice"]),  # epochs without validation
            x="epoch",
            y="val_dice",
            hue="loss",
            hue_order=losses,
            errorbar=("pi", 100),
            marker="o",
            ax=ax,
        )
    ax.set(ylabel="validation Dice (per patient)", ylim=(0, 1))
    return fig


def false_positives(per_model: pd.DataFrame, per_image: pd.DataFrame, losses: list[str]) -> Figure:
    """Tumour-free test slices: share with any false positive, and false-positive pixels."""
    empty = per_image[per_image["gt_pixels"] == 0]
    fig = _figure(10, 4)
    left, right = fig.subplots(1, 2)
    sns.barplot(
        data=per_model, x="loss", y="fp_rate_empty", order=losses, errorbar=mean_ci, ax=left
    )
    left.set(ylim=(0, 1), xlabel="", ylabel="share of tumour-free slices with FP (95 % CI)")
    sns.boxplot(data=empty, x="loss", y="fp", order=losses, ax=right, fliersize=2)
    right.set(xlabel="", ylabel="false-positive pixels per tumour-free slice")
    return fig


def dice_by_size(terciles: pd.DataFrame, losses: list[str]) -> Figure:
    """Mean Dice per tumour-size tercile and loss: does a loss miss the small tumours?"""
    fig = _figure(8, 4)
    ax = fig.subplots()
    if not terciles.empty:
        sns.barplot(
            data=terciles,
            x="tercile",
            y="dice",
            hue="loss",
            hue_order=losses,
            errorbar=mean_ci,
            ax=ax,
        )
        areas = terciles.groupby("tercile", observed=True)["area"].median()
        ax.set_xticks(
            range(len(areas)), [f"{name}\n(median {area:.0f} px)" for name, area in areas.items()]
        )
    ax.set(ylim=(0, 1), xlabel="tumour size tercile (ground-truth area)", ylabel="Dice per slice")
    return fig


def reliability(bins: pd.DataFrame, ece: pd.Series, losses: list[str]) -> Figure:
    """Observed tumour frequency against predicted probability (pixels pooled over seeds)."""
    fig = _figure(5.5, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="perfect calibration")
    for loss, colour in zip(losses, sns.color_palette(n_colors=len(losses)), strict=True):
        line = bins[(bins["loss"] == loss) & (bins["count"] > 0)]
        ax.plot(
            line["mean_prob"],
            line["frac_positive"],
            marker="o",
            color=colour,
            label=f"{loss} (ECE {ece[loss]:.3f})",
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="predicted tumour probability (bin mean)",
        ylabel="observed tumour frequency",
    )
    ax.legend(loc="upper left", fontsize="small")
    return fig


def threshold_sensitivity(
    thresholds: pd.DataFrame, per_model: pd.DataFrame, fixed: float, losses: list[str]
) -> Figure:
    """Test per-patient Dice against the threshold (band = seed range), val-best marked."""
    test = thresholds[thresholds["split"] == "test"]
    fig = _figure(8, 4)
    ax = fig.subplots()
    sns.lineplot(
        data=test,
        x="threshold",
        y="dice_per_patient",
        hue="loss",
        hue_order=losses,
        errorbar=("pi", 100),
        ax=ax,
    )
    palette = dict(zip(losses, sns.color_palette(n_colors=len(losses)), strict=True))
    best = per_model.groupby("loss")["best_threshold"].mean()
    for loss, value in best.items():
        ax.axvline(value, color=palette[loss], linestyle=":", linewidth=1.5)
    ax.axvline(fixed, color="0.3", linestyle="--", linewidth=1, label=f"fixed {fixed:g}")
    ax.set(ylim=(0, 1), ylabel="test Dice per patient", xlabel="binarisation threshold")
    ax.legend(fontsize="small")
    return fig


def overlays(
    test: PreparedSplit,
    rows: list[int],
    predictions: dict[str, np.ndarray],
    dice: dict[str, np.ndarray],
    truth: np.ndarray | None = None,
    *,
    rgb: bool = False,
) -> Figure:
    """The same test slices for every loss: FLAIR image (``rgb``: the colour image), ground
    truth, each prediction.

    ``predictions`` maps a column title to its masks (N,H,W) and ``dice`` the same title to
    its per-slice Dice (N,), shown in each panel's title. ``truth``: the ground truth at the
    masks' (source) size; the prepared image is stretched over the same extent.
    """
    truth = test.masks if truth is None else truth
    columns = ["image" if rgb else "image (FLAIR)", "ground truth", *predictions]
    fig = _figure(1.9 * len(columns), 2.0 * len(rows))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        image = test.images[row] if rgb else test.images[row][..., 1]
        h, w = truth[row].shape
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        masks = {"ground truth": truth[row].astype(bool)} | {
            title: masks[row] for title, masks in predictions.items()
        }
        for c, title in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(image, cmap=None if rgb else "gray", extent=extent)
            if title in masks:
                overlay = np.ma.masked_where(~masks[title], masks[title])
                ax.imshow(overlay, cmap="autumn", alpha=0.55, vmin=0, vmax=1, extent=extent)
            label = title if r == 0 else ""
            if title in predictions:
                label = f"{label}\nDice {dice[title][row]:.2f}".strip()
            elif c == 0:
                label = f"{label}\n{test.patients[row]} s{test.slices[row]}".strip()
            elif c == 1:
                label = f"{label}\n{int(truth[row].sum())} px".strip()
            ax.set_title(label, fontsize=8)
            ax.set_axis_off()
    return fig


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="tight")
