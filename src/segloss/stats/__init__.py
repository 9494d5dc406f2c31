"""Paired comparison of two losses over test patients, with patients and models crossed.

Every model (one training run: a seed, and with cross-validation a fold) scores every test
patient of its fold, so patients and models are *crossed* random factors, as cases and
readers are in a multi-reader multi-case (MRMC) study of radiology. The difference
``candidate - baseline`` of patient ``p`` under model ``m`` is modelled as

    d[p, m] = mu + a[p] + b[m] + e[p, m]      a ~ N(0, s_patient), b ~ N(0, s_seed), ...

and the headline is the mean of ``d`` over patients (each patient's seeds averaged first).
Its variance ``s_patient/P + s_seed/S + s_residual/(P*S)`` keeps the seed term: a seed
effect that all patients share does not average away over patients, as it did in the
nested bootstrap this module used before.

Why ANOVA variance components with a Satterthwaite t-interval, and not a bootstrap or
statsmodels' ``MixedLM``: with three seeds, resampling seeds sees at most 10 distinct seed
sets and underestimates the seed variance by (S-1)/S, and ``MixedLM`` gives Wald z-intervals;
both cover far below the nominal level when the seed variance dominates (see
``tests/test_stats.py``). The ANOVA estimator equals REML (``MixedLM``, tested) on the balanced
design, is closed form, and the Satterthwaite degrees of freedom give a small-sample
t-interval (Hillis 2007 for MRMC).

Modules: :mod:`.variance` (the crossed model: components, interval, power),
:mod:`.signed_rank` (Wilcoxon, rank-biserial, baycomp, Holm), :mod:`.comparison` (score
tables, the paired comparison and its verdict, the interaction with a second factor,
Friedman over three or more losses), :mod:`.superiority` (single-run risk), :mod:`.rates`
(collapse rates) and :mod:`.agreement` (do the metrics rank the models alike).
"""

from segloss.stats.agreement import discordant_share, metric_agreement
from segloss.stats.comparison import (
    VERDICTS,
    CrossedVerdict,
    Interaction,
    PairedComparison,
    complete,
    crossed_verdict,
    decide,
    friedman,
    interaction,
    loss_variance,
    model_table,
    paired_comparison,
)
from segloss.stats.rates import Rate, clopper_pearson, fisher_test, rate
from segloss.stats.signed_rank import bayes_signed_rank, holm, rank_biserial, wilcoxon_p
from segloss.stats.superiority import Superiority, superiority
from segloss.stats.variance import (
    CI_METHOD,
    Components,
    Power,
    crossed_interval,
    design_needed,
    minimum_detectable,
    power,
    projected_df,
    variance_components,
)

__all__ = [
    "CI_METHOD",
    "VERDICTS",
    "Components",
    "CrossedVerdict",
    "Interaction",
    "PairedComparison",
    "Power",
    "Rate",
    "Superiority",
    "bayes_signed_rank",
    "clopper_pearson",
    "complete",
    "crossed_interval",
    "crossed_verdict",
    "decide",
    "design_needed",
    "discordant_share",
    "fisher_test",
    "friedman",
    "holm",
    "interaction",
    "loss_variance",
    "metric_agreement",
    "minimum_detectable",
    "model_table",
    "paired_comparison",
    "power",
    "projected_df",
    "rate",
    "rank_biserial",
    "superiority",
    "variance_components",
    "wilcoxon_p",
]
