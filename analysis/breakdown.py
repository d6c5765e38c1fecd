"""Where each arm's accuracy goes, attack by attack: clean -> FGSM -> PGD -> AutoAttack (-> Square)
-> the per-example worst case, each the mean over the arm's final models that have a verdict.

Each attack's column is its accuracy alone (``eval/per_attack/<attack>`` of ``metaadv evaluate
--json``: correct on the clean example and still correct after that attack); ``robust`` is the
verdict, the per-example worst case over all of them, so it is at most every attack's column. A
strong attack far below a weak one is what gradient masking does not show, one above it is what it
does (the verdict's ``pgd_beats_fgsm`` check). Measured values, untrusted verdicts included as
measured (the main table counts them at their worst case): ``n_untrusted`` says how many.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["attack_breakdown", "STAGES"]

# The order a reader follows: no attack, the single step, the iterated one, the ensemble.
STAGES = ("clean", "fgsm", "pgd", "autoattack", "square")


def attack_breakdown(frame: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """Per arm: ``arm, n_models, n_untrusted``, then ``clean``, each attack present in any verdict
    (``fgsm, pgd, autoattack, square`` in that order, others after them alphabetically) and
    ``robust`` (the worst case), each a mean over the arm's models with a verdict (fractions, as
    every table). Arms in ``finals``' order; empty where no model has a verdict."""
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
    for arm, g in rows.groupby("arm", sort=False):
        row = {"arm": arm, "n_models": len(g), "n_untrusted": int(g["trusted"].map(lambda v: str(v) == "False").sum()),
               "clean": g["clean_acc"].astype(float).mean(), "robust": g["robust_acc"].astype(float).mean()}
        row.update({a: pd.to_numeric(g[f"eval/per_attack/{a}"], errors="coerce").mean() for a in attacks})
        out.append(row)
    return pd.DataFrame(out, columns=cols)
