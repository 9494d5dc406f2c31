"""The verdict in words and tables: the headline paragraph and the comparison tables."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from segloss.report.document import Comparison, Json, Verdict
from segloss.report.tables import loss_label
from segloss.report.verdict import REAL_SOURCES


def _number(value: float | None) -> str:
    return "– (every patient tied)" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def interval(ci: list[float | None] | None) -> str:
    if not ci:
        return "–"
    return f"[{_signed(ci[0])}, {_signed(ci[1])}]"


def _percent(level: float) -> str:
    return f"{100 * level:g} %"


def named(r: Comparison, role: str) -> str:
    """A comparison's ``candidate`` or ``baseline`` with its variant: ``bce_dice (batch)``."""
    return loss_label(r[role], (r.get("variant") or {}).get(role))


def outcome(r: Comparison) -> str:
    """One comparison's verdict with its numbers, e.g. for the headline or a sensitivity line."""
    cand, base, metric, m = named(r, "candidate"), named(r, "baseline"), r["metric"], r["margin"]
    numbers = (
        f"mean difference {_signed(r['mean_difference'])} "
        f"({_percent(r['ci_level'])} CI {interval(r['ci'])})"
    )
    low, high = r["ci"]
    within = -m <= low and high <= m
    match r["verdict"]:
        case "better" | "worse":
            word = "beats" if r["verdict"] == "better" else "is worse than"
            text = f"{cand} {word} {base} on {metric}: {numbers}"
            if within:
                text += (
                    f", but the whole interval lies inside the pre-set ±{m:g} margin: a real "
                    "difference, smaller than what was fixed in advance to matter"
                )
            return text
        case "equivalent":
            return (
                f"{cand} and {base} are equivalent on {metric}: {numbers} lies inside the "
                f"pre-set ±{m:g} margin"
            )
        case _:
            return (
                f"Inconclusive: the data cannot tell {cand} from {base} on {metric}: {numbers} "
                f"includes 0 and reaches beyond the pre-set ±{m:g} margin"
            )


def _collapse(verdict: Verdict, n_seeds: Mapping[str, int], threshold: float) -> str:
    names = [loss for loss, count in verdict["collapsed_seeds"].items() if count]
    if not names:
        return f"No model collapsed (best validation Dice below {threshold:g})."
    parts = ", ".join(
        f"{loss} collapsed in {verdict['collapsed_seeds'][loss]} of {n_seeds[loss]} seeds"
        for loss in names
    )
    text = f"Collapse: {parts} (best validation Dice below {threshold:g})"
    sensitivity = verdict.get("without_collapsed")
    if sensitivity:
        return (
            f"{text}; without the collapsed seeds (sensitivity analysis, seeds "
            f"{', '.join(map(str, sensitivity['dropped_seeds']))} left out of both losses) "
            f"the difference is {_signed(sensitivity['mean_difference'])} "
            f"{interval(sensitivity['ci'])}: {sensitivity['verdict']}."
        )
    involved = {verdict["baseline"], verdict["candidate"]} & set(names)
    if involved:
        return f"{text}; no seed is left without a collapse, so there is no sensitivity analysis."
    both = f"{named(verdict, 'candidate')} nor {named(verdict, 'baseline')}"
    return f"{text}; neither {both} is affected."


def _collapse_rates(verdict: Verdict) -> str:
    """The primary pair's collapse rates with exact intervals and Fisher's test."""
    rates, test = verdict["collapse"], verdict["collapse_test"]
    pair = [r for r in (verdict["baseline"], verdict["candidate"]) if r in rates]
    listed = ", ".join(
        f"{loss} {rates[loss]['collapsed']}/{rates[loss]['models']} models "
        f"[{rates[loss]['ci'][0]:.2f}, {rates[loss]['ci'][1]:.2f}]"
        for loss in pair
    )
    return (
        f"Collapse rates ({_percent(verdict['ci_level'])} exact CI): {listed}; Fisher's exact "
        f"p = {test['p_value']:.3g}."
    )


def _power(verdict: Verdict) -> str:
    power, m = verdict["power"], verdict["margin"]
    design = f"{verdict['n_pairs']} patients x {verdict['n_seeds']} seed(s)"
    text = (
        f"Power: this design ({design}) detects a true difference of {power['mde']:.3f} with "
        f"80 % power at alpha {verdict['alpha']:g}"
    )
    patients, seeds = power["patients_needed"], power["seeds_needed"]
    if patients is None and seeds is None:
        return (
            text + f"; neither more patients alone nor more seeds alone would detect the "
            f"±{m:g} margin: it needs both."
        )
    needs = []
    if patients is not None:
        needs.append(f"{patients} patients (with {verdict['n_seeds']} seeds)")
    else:
        needs.append("no number of patients alone (the seed variance does not average away)")
    if seeds is not None:
        needs.append(f"{seeds} seeds (with {verdict['n_pairs']} patients)")
    return text + f"; detecting the ±{m:g} margin would take " + " or ".join(needs) + "."


def _learning_rate(rates: Mapping[str, list[float]]) -> str:
    values = {v for lrs in rates.values() for v in lrs}
    if not values:
        return "learning rate not recorded"
    if len(values) == 1:
        return f"one learning rate shared by every loss ({values.pop():g})"
    return (
        "learning rate tuned per loss on validation Dice ("
        + ", ".join(f"{loss} {'/'.join(f'{v:g}' for v in lrs)}" for loss, lrs in rates.items())
        + ")"
    )


def headline(
    verdict: Verdict,
    source: str,
    regime: Json,
    n_seeds: Mapping[str, int],
    collapse_dice: float,
) -> str:
    """One paragraph: the outcome with its numbers, collapse, power, then the caveats."""
    if regime.get("n_models"):
        epochs = (
            f"{regime['epochs_min']}"
            if regime["epochs_min"] == regime["epochs_max"]
            else f"{regime['epochs_min']}-{regime['epochs_max']}"
        )
        still = (
            f"validation Dice was still rising at the end for {regime['n_rising']} of "
            f"{regime['n_models']} models, so this compares early training, not converged models"
            if regime["n_rising"]
            else "validation Dice had levelled off for every model"
        )
        training = f"{epochs} epochs per model; {still}"
    else:
        training = "no learning curves were found"
    data = "real" if any(word in source.lower() for word in REAL_SOURCES) else "synthetic"
    caveats = (
        f"Caveats: {verdict['n_pairs']} test patients and {verdict['n_seeds']} seed(s) per loss; "
        f"{data} data (source: {source}); {training}; "
        f"{_learning_rate(verdict.get('learning_rates', {}))}."
    )
    if verdict["verdict"] is None:
        return f"No verdict: {verdict['reason']}. {caveats}"
    text = outcome(verdict)
    bayes = verdict["bayes"]
    parts = [
        f"{text}.",
        f"Secondary: Wilcoxon p = {verdict['p_value']:.3g}; Bayesian signed-rank "
        f"P({named(verdict, 'candidate')} better) = {bayes['p_better']:.2f}, P(equivalent) = "
        f"{bayes['p_equivalent']:.2f}, P({named(verdict, 'baseline')} better) = "
        f"{bayes['p_worse']:.2f}; "
        "per seed " + ", ".join(_signed(v) for v in verdict["per_seed_differences"].values()) + ".",
        _collapse(verdict, n_seeds, collapse_dice),
        _collapse_rates(verdict),
        superiority_text(verdict),
    ]
    best = verdict.get("at_best_threshold")
    if best:
        parts.append(
            f"At each model's validation-best threshold (sensitivity analysis): "
            f"{_signed(best['mean_difference'])} {interval(best['ci'])}, {best['verdict']}."
        )
    parts += [_power(verdict), caveats]
    return " ".join(parts)


def comparison_table(verdict: Verdict) -> pd.DataFrame:
    """The primary comparison, then every secondary one (Holm-adjusted), one row each."""
    rows = [verdict, *verdict["comparisons"]] if verdict["verdict"] else verdict["comparisons"]
    table = pd.DataFrame(
        [
            {
                "candidate vs baseline": f"{named(r, 'candidate')} vs {named(r, 'baseline')}",
                "metric": r["metric"] + ("" if r["higher_is_better"] else " (↓)"),
                "role": "primary" if r is verdict else "secondary",
                "mean difference": r["mean_difference"],
                f"{_percent(r['ci_level'])} CI": interval(r["ci"]),
                "margin": r["margin"],
                "verdict": r["verdict"],
                "p (Wilcoxon)": r["p_value"],
                "p (Holm)": r["p_holm"],
                "P(better / equiv. / worse)": "{p_better:.2f} / {p_equivalent:.2f} / "
                "{p_worse:.2f}".format(**r["bayes"]),
                "per-seed differences": ", ".join(
                    f"s{seed}: {_signed(value)}"
                    for seed, value in r["per_seed_differences"].items()
                ),
                "without collapsed seeds": _sensitivity(r.get("without_collapsed")),
                "patients": r["n_pairs"],
                "seeds": r["n_seeds"],
            }
            for r in rows
        ]
    )
    return table.round(4)


def _sensitivity(r: Comparison | None) -> str:
    return "–" if not r else f"{_signed(r['mean_difference'])} {interval(r['ci'])} {r['verdict']}"


def variance_table(verdict: Verdict) -> pd.DataFrame:
    """Per loss, the shares of the headline metric's variance (patients, seeds, folds)."""
    variants = verdict.get("loss_variants", {})
    rows = [
        {
            "loss": loss_label(loss, variants.get(loss)),
            **{k: shares.get(k) for k in ("patient", "seed", "fold", "residual")},
        }
        for loss, shares in verdict["variance_by_loss"].items()
    ]
    difference = verdict.get("variance")
    if difference:
        name = f"{named(verdict, 'candidate')} - {named(verdict, 'baseline')}"
        rows.append(
            {
                "loss": name,
                **{k: difference.get(k) for k in ("patient", "seed", "fold", "residual")},
            }
        )
    return pd.DataFrame(rows).round(3)


def friedman_text(friedman: Json, metric: str, variants: Mapping[str, str | None]) -> str:
    """The omnibus test over every loss in one sentence (losses named with their variant)."""
    label = {loss: loss_label(loss, variants.get(loss)) for loss in friedman["mean_ranks"]}
    ranks = ", ".join(f"{label[loss]} {rank:.2f}" for loss, rank in friedman["mean_ranks"].items())
    pairs = "; ".join(
        f"{label[p['a']]} vs {label[p['b']]} p = {p['p_value']:.3g} (Holm {p['p_holm']:.3g})"
        for p in friedman["posthoc"]
    )
    return (
        f"Friedman test over {friedman['n_patients']} patients on {metric} (seed means): "
        f"chi² = {_number(friedman['statistic'])}, p = {friedman['p_value']:.3g}. Mean ranks "
        f"(1 = best): {ranks}. Pairwise Wilcoxon signed-rank tests, Holm-corrected: {pairs}."
    )


def collapse_table(rates: Mapping[str, Json], level: float) -> pd.DataFrame:
    """One row per group (a loss, or an arm and loss): collapsed models of all, the rate and
    its exact interval."""
    return pd.DataFrame(
        [
            {
                "models": label,
                "collapsed / trained": f"{r['collapsed']} / {r['models']}",
                "rate": r["rate"],
                f"{_percent(level)} CI (exact)": f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]",
            }
            for label, r in rates.items()
        ]
    ).round(3)


def superiority_text(r: Comparison) -> str:
    """The single-run risk of one comparison in a sentence."""
    s = r.get("superiority") or {}
    cand, base = named(r, "candidate"), named(r, "baseline")
    if s.get("estimate") is None:
        return f"Single-run risk of {cand} vs {base}: needs two seeds or more."
    ci = s.get("ci")
    bounds = "" if ci is None else f" ({_percent(s['ci_level'])} CI [{ci[0]:.2f}, {ci[1]:.2f}])"
    return (
        f"Trained once each, a {cand} run scores higher than an independent {base} run on a "
        f"random test patient with probability {s['estimate']:.2f}{bounds} on {r['metric']} "
        "(over test patients and every pair of different seeds; 0.5 = a coin toss)."
    )


def agreement_table(rows: list[Json]) -> pd.DataFrame:
    """The pairs of metrics as a matrix: Kendall's tau between the models' orders, with the
    share of model pairs the two order differently in brackets."""
    names = list(dict.fromkeys([n for r in rows for n in (r["metric_a"], r["metric_b"])]))
    cells = pd.DataFrame("", index=names, columns=names)
    for r in rows:
        text = f"{_number(r['kendall_tau'])} ({100 * r['discordant_share']:.0f} %)"
        cells.loc[r["metric_a"], r["metric_b"]] = cells.loc[r["metric_b"], r["metric_a"]] = text
    return cells.rename_axis("τ (pairs reversed)").reset_index()


def verdicts_table(verdict: Verdict) -> pd.DataFrame:
    """Per candidate loss and metric: the difference from the baseline, its interval and
    verdict (``verdicts_by_metric``)."""
    variants = verdict.get("loss_variants", {})
    return pd.DataFrame(
        [
            {
                "candidate vs baseline": loss_label(loss, variants.get(loss)),
                "metric": metric,
                "mean difference": r["mean_difference"],
                f"{_percent(verdict['ci_level'])} CI": interval(r["ci"]),
                "margin": r["margin"],
                "verdict": r["verdict"],
            }
            for loss, by_metric in verdict["verdicts_by_metric"].items()
            for metric, r in by_metric.items()
        ]
    ).round(4)


def metric_trust(verdict: Verdict, n_models: int) -> str:
    """'Which metric to trust', written from this run's agreement numbers and verdicts."""
    primary = verdict["metric"]
    with_primary = [
        r for r in verdict["metric_agreement"] if primary in (r["metric_a"], r["metric_b"])
    ]

    def other(r: Json) -> str:
        return r["metric_b"] if r["metric_a"] == primary else r["metric_a"]

    parts = []
    if with_primary and n_models >= 3:
        ordered = sorted(
            with_primary, key=lambda r: -1 if r["kendall_tau"] is None else r["kendall_tau"]
        )
        listing = "; ".join(
            f"{other(r)} τ = {_number(r['kendall_tau'])} ({100 * r['discordant_share']:.0f} % "
            "of pairs reversed)"
            for r in ordered
        )
        parts.append(
            f"Over this run's {n_models} models (a loss and seed; folds averaged), how each "
            f"metric orders them against the primary {primary}, least agreement first: "
            f"{listing}."
        )
        accuracy = next((r for r in with_primary if other(r) == "pixel_accuracy"), None)
        if accuracy is not None:
            parts.append(
                f"Pixel accuracy reverses {100 * accuracy['discordant_share']:.0f} % of the "
                f"model pairs that {primary} orders."
            )
    else:
        parts.append(f"With {n_models} models there is no ranking of models to compare.")
    parts.append(
        "Whatever accuracy does here, the all-background row below scores near-perfect "
        "accuracy with zero overlap, so it is not evidence for a loss."
    )
    by_metric = {
        loss: {m: r["verdict"] for m, r in by.items()}
        for loss, by in verdict["verdicts_by_metric"].items()
    }
    changed = [loss for loss, by in by_metric.items() if len(set(by.values())) > 1]
    if changed:
        parts.append(
            "The verdict changes with the metric for: "
            + "; ".join(
                f"{loss} (" + ", ".join(f"{m} {v}" for m, v in by_metric[loss].items()) + ")"
                for loss in changed
            )
            + ". Cite the primary metric, fixed in advance; the others show where the answer "
            "is fragile."
        )
    elif by_metric:
        parts.append(
            "No comparison changes verdict with the metric: the answer does not hinge "
            "on which overlap or distance score is cited."
        )
    return " ".join(parts)
