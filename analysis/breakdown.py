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

# The order a reader follows: no attack, the single step, the iterated one, the ensemble, the
# gradient-free one, transfer from an independently trained surrogate.
STAGES = ("clean", "fgsm", "pgd", "autoattack", "square", "transfer-pgd")


def attack_breakdown(frame: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """Per arm: ``arm, n_models`` (the models averaged), ``n_untrusted`` (left out), then ``clean``,
    each attack present in any verdict (``fgsm, pgd, autoattack, square, transfer-pgd`` in that order,
    others after them alphabetically; ``transfer-pgd:PATH`` of every surrogate as one ``transfer-pgd``) and ``robust`` (the worst case), each a mean over the arm's models with a
    verdict that is not untrusted (fractions, as every table; NaN for an arm with only untrusted
    ones). Arms in ``finals``' order; empty where no model has a verdict."""
    # One stage per kind: ``transfer-pgd:PATH`` names each model's own surrogate, so its columns are
    # taken together (a model's worst over its surrogates).
    columns: dict[str, list[str]] = {}
    for c in (c for c in frame.columns if c.startswith("eval/per_attack/")):
        columns.setdefault(c.removeprefix("eval/per_attack/").split(":", 1)[0], []).append(c)
    attacks = [a for a in STAGES if a in columns] + sorted(a for a in columns if a not in STAGES)
    cols = ["arm", "n_models", "n_untrusted", "clean", *attacks, "robust"]
    judged = finals[finals["metric_source"] == "eval"] if len(finals) else finals
    if judged.empty:
        return pd.DataFrame(columns=cols)
    last = (frame[frame["final_model"].astype(bool)].sort_values("report", kind="stable")
            .groupby(["arm", "model"], sort=False).tail(1))
    stages = last[["arm", "model"]].copy()
    for a in attacks:
        stages[a] = last[columns[a]].apply(pd.to_numeric, errors="coerce").min(axis=1, skipna=True)
    rows = judged[["arm", "model", "trusted", "clean_acc", "robust_acc"]].merge(stages, on=["arm", "model"], how="left")
    out = []
    for arm, everyone in rows.groupby("arm", sort=False):
        bad = everyone["trusted"].map(lambda v: str(v) == "False").astype(bool)
        g = everyone[~bad]
        row = {"arm": arm, "n_models": len(g), "n_untrusted": int(bad.sum()),
               "clean": g["clean_acc"].astype(float).mean(), "robust": g["robust_acc"].astype(float).mean()}
        row.update({a: g[a].mean() for a in attacks})
        out.append(row)
    return pd.DataFrame(out, columns=cols)
