"""The judge of a meta-learning study (``Study.kind == "meta"``): ``metaadv meta-evaluate`` on a
final model, as :func:`metaadv.meta.meta_test` runs it.

Its options (a size's ``evaluation``, over which an arm's ``evaluation`` goes) are
:data:`OPTIONS`: the meta-test's (``tasks``, the eps ``sweep``, ``pgd_steps``, ``pgd_restarts``,
``autoattack_eps`` with ``aa_tasks`` and ``square_queries``, ``inner_steps``, ``queries``,
``seed``, ``device``), a
``label`` (the ``method`` column of the per-task rows: the arm's name, so that two arms of one
algorithm pair up as two), ``per_task`` (write the per-task CSV beside the JSON), and a second
pass with the support set attacked too (``support_attack``: ``theta`` or ``unrolled``, at
``support_eps`` on the first ``support_tasks`` tasks). ``contrast_eps`` is read by the analysis,
not the judge: the eps (of the sweep) at which the declared contrasts are tested, Holm-adjusted
together (:mod:`analysis.fewshot_report`; the headline eps alone when absent).

The verdict's ``robust_acc`` is the sweep's value at the study's threat eps (the judge's ``eps``,
the *headline*), not at the sweep's largest eps as ``meta-evaluate`` reports it; the JSON keeps
both (``headline_eps``, ``robust_acc_max_eps``). Where AutoAttack (with Square, given
``square_queries``) ran at the headline eps on every task, ``robust_acc`` is the per-example worst
case over PGD and them (``headline_judge`` says which; ``robust_acc_pgd`` keeps PGD's alone), so
the generic contrasts and the aim read the strongest judge. The meta-test runs no gradient-masking checks,
so the JSON has no ``trusted`` key: the study calls its verdicts "trust unknown".

Files, for ``out`` = ``eval/ARM/MODEL.json``: ``MODEL.tasks.csv`` (the sweep, one row per task and
eps) and ``MODEL.support.csv`` (the support-attack pass), written before the JSON, so a JSON on
disk means the model is judged.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

__all__ = ["OPTIONS", "check_options", "meta_test_result", "per_task_paths"]

# option -> what it must be (checked by check_options before Ray starts)
OPTIONS = {
    "tasks": "an integer >= 1", "sweep": "a list of eps in [0, 1] that includes the threat eps", "pgd_steps": "an integer >= 1",
    "pgd_restarts": "an integer >= 1", "autoattack_eps": "one of the sweep's eps, or None",
    "aa_tasks": "an integer >= 1", "inner_steps": "an integer >= 1, or None (the run's)",
    "queries": "an integer >= 1, or None (the run's)", "seed": "an integer (the meta-test tasks' seed)",
    "device": "auto, cpu or cuda", "label": "a name without commas", "per_task": "true or false",
    "support_attack": "none, theta or unrolled", "support_eps": "an eps in [0, 1]",
    "support_tasks": "an integer >= 1",
    "square_queries": "an integer >= 1 (Square after AutoAttack's set: needs autoattack_eps), or None",
    "contrast_eps": "a list of the sweep's eps (where the analysis tests the declared contrasts)",
}
_INTS = ("tasks", "pgd_steps", "pgd_restarts", "aa_tasks", "support_tasks", "inner_steps", "queries", "square_queries")


def _bad(key: str, value) -> UserError:
    return UserError(f"meta judge option {key}={value!r}: must be {OPTIONS[key]}")


def check_options(options: dict, headline_eps: float) -> None:
    """Refuse what :func:`meta_evaluate` would fail on, in one line, before anything runs."""
    from ..meta.evaluate import SUPPORT_ATTACKS

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown meta judge option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    for key in _INTS:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _bad(key, value)
    sweep = options.get("sweep", [headline_eps])
    if not isinstance(sweep, (list, tuple)) or not sweep or not all(
            isinstance(e, (int, float)) and 0.0 <= e <= 1.0 for e in sweep):
        raise _bad("sweep", sweep)
    if not any(abs(float(e) - headline_eps) < 1e-12 for e in sweep):
        raise UserError(f"meta judge option sweep={list(sweep)!r} must include the study's threat eps {headline_eps:g} "
                        "(the headline robust_acc)")
    aa = options.get("autoattack_eps")
    if aa is not None and not any(abs(float(e) - aa) < 1e-12 for e in sweep):
        raise _bad("autoattack_eps", aa)
    if options.get("square_queries") is not None and aa is None:
        raise _bad("square_queries", options["square_queries"])
    contrast_eps = options.get("contrast_eps", [headline_eps])
    if not isinstance(contrast_eps, (list, tuple)) or not contrast_eps or not all(
            isinstance(c, (int, float)) and any(abs(float(e) - c) < 1e-12 for e in sweep) for c in contrast_eps):
        raise _bad("contrast_eps", contrast_eps)
    if options.get("support_attack", "none") not in SUPPORT_ATTACKS:
        raise _bad("support_attack", options["support_attack"])
    if not 0.0 <= float(options.get("support_eps", headline_eps)) <= 1.0:
        raise _bad("support_eps", options["support_eps"])
    if not isinstance(options.get("per_task", False), bool):
        raise _bad("per_task", options["per_task"])
    label = options.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip() or "," in label):
        raise _bad("label", label)


def per_task_paths(out: str | Path) -> tuple[Path, Path]:
    """The sweep's and the support-attack pass's per-task CSVs of the verdict ``out`` (a JSON)."""
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    return out.with_name(f"{stem}.tasks.csv"), out.with_name(f"{stem}.support.csv")


def meta_test_result(checkpoint: Path, out: str | Path, eps: float, options: dict) -> dict:
    """Meta-test the checkpoint file ``checkpoint`` with ``options``: the JSON the study keeps at
    ``out`` (written by the caller, :func:`metaadv.study.evaluate.JUDGES`), ``robust_acc`` at
    ``eps``; the per-task CSVs are written beside ``out`` first."""
    from ..meta import meta_test

    check_options(options, eps)
    o = dict(options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks_csv, support_csv = per_task_paths(out)
    per_task = bool(o.pop("per_task", False))
    o.pop("contrast_eps", None)  # the analysis's
    support = {"attack": o.pop("support_attack", "none"), "eps": float(o.pop("support_eps", eps)),
               "tasks": o.pop("support_tasks", o.get("tasks", 600))}
    sweep = sorted({float(e) for e in o.pop("sweep", [eps])} | {float(eps)})
    result = meta_test(checkpoint, eps=sweep, per_task=tasks_csv if per_task else None, **o)
    headline = next(r for r in result["sweep"] if abs(r["eps"] - eps) < 1e-12)
    result.update({"headline_eps": float(eps), "robust_acc_max_eps": result["robust_acc"],
                   "robust_ci95_max_eps": result["robust_ci95"], "robust_acc": headline["robust_acc"],
                   "robust_ci95": headline["robust_ci95"], "robust_acc_pgd": headline["robust_acc"],
                   "headline_judge": "pgd", "per_task": tasks_csv.name if per_task else None})
    if result.get("aa_eps") is not None and abs(result["aa_eps"] - eps) < 1e-12 and result["aa_tasks"] == result["tasks"]:
        # AutoAttack (and Square) ran at the headline eps on every task: the verdict is their worst case with PGD
        result.update({"robust_acc": result["aa_robust_acc"], "robust_ci95": result["aa_robust_ci95"],
                       "headline_judge": "+".join(["pgd", *result["aa_components"]])})
    if support["attack"] != "none":
        keep = {k: o[k] for k in ("pgd_steps", "pgd_restarts", "inner_steps", "queries", "seed", "device", "label")
                if k in o}
        s = meta_test(checkpoint, tasks=support["tasks"], eps=[support["eps"]], support_attack=support["attack"],
                      per_task=support_csv if per_task else None, **keep)
        result["support"] = {"support_attack": support["attack"], "eps": support["eps"], "tasks": s["tasks"],
                             "clean_acc": s["clean_acc"], "robust_acc": s["robust_acc"], "robust_ci95": s["robust_ci95"],
                             "grad_evals": s["grad_evals"], "seconds": s["seconds"],
                             "per_task": support_csv.name if per_task else None}
    return result
