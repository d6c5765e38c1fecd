"""Where each arm's accuracy goes, attack by attack: clean -> FGSM -> PGD -> AutoAttack (-> Square)
-> the per-example worst case, each the mean over the arm's final models that have a verdict.

Each attack's column is its accuracy alone (``eval/per_attack/<attack>`` of ``metaadv evaluate
--json``: correct on the clean example and still correct after that attack); ``robust`` is the
verdict, the per-example worst case over all of them, so it is at most every attack's column. A
strong attack far below a weak one is what gradient masking does not show, one above it is what it
does (the verdict's ``pgd_beats_fgsm`` check). Untrusted verdicts are left out of the means
(their gradient attacks say nothing of their robustness; the report lists them with their measured
values): ``n_untrusted`` says how many, so an arm without one reads its worst case as the main table does.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["attack_breakdown", "STAGES"]

# The order a reader follows: no attack, the single step, the iterated one, the ensemble.
STAGES = ("clean", "fgsm", "pgd", "autoattack", "square")


def attack_breakdown(frame: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """Per arm: ``arm, n_models`` (the models averaged), ``n_untrusted`` (left out), then ``clean``,
    each attack present in any verdict (``fgsm, pgd, autoattack, square`` in that order, others after
    them alphabetically) and ``robust`` (the worst case), each a mean over the arm's models with a
    verdict that is not untrusted (fractions, as every table; NaN for an arm with only untrusted
    ones). Arms in ``finals``' order; empty where no model has a verdict."""
    attacks = [c.removeprefix("eval/per_attack/") for c in frame.columns if c.startswith("eval/per_attack/")]
    attacks = [a for a in STAGES if a in attacks] + sorted(a for a in attacks if a not in STAGES)
    cols = ["arm", "n_models", "n_untrusted", "clean", *attacks, "robust"]
    judged = finals[finals["metric_source"] == "eval"] if len(finals) else finals
    if judged.empty:
        return pd.DataFrame(columns=cols)
    last = (frame[frame["final_model"].astype(bool)].sort_values("report", kind="stable")
            .groupby(["arm", "model"], sort=False).tail(1))
    per = [f"eval/per_attack/{a}" for a in attacks]
    rows = judged[["arm", "model", "trusted", "clean_acc", "robust_acc"]].merge(
        last[["arm", "model", *per]], on=["arm", "model"], how="left")
    out = []
    for arm, everyone in rows.groupby("arm", sort=False):
        bad = everyone["trusted"].map(lambda v: str(v) == "False").astype(bool)
        g = everyone[~bad]
        row = {"arm": arm, "n_models": len(g), "n_untrusted": int(bad.sum()),
               "clean": g["clean_acc"].astype(float).mean(), "robust": g["robust_acc"].astype(float).mean()}
        row.update({a: pd.to_numeric(g[f"eval/per_attack/{a}"], errors="coerce").mean() for a in attacks})
        out.append(row)
    return pd.DataFrame(out, columns=cols)
