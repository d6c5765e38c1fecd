"""A hand-built study folder (STUDY_CONTRACT.md layout) with known numbers, for the analysis tests.

Arms (3 rounds of 1000 training + 100 validation grad evals per trial unless said):
- fixed: seeds 0, 1, 2; robust 0.40, 0.42, 0.44;
- learned (policy, decision_validation): seeds 0, 1, 2; robust 0.50, 0.53, 0.55 -> beats fixed;
- tuned (decision_validation): a 5-trial random search (robust = 0.2 + eps) and a rerun on seeds 0-2:
  robust 0.41, 0.41 and an untrusted 0.99 on seed 2;
- searched: the real PBT fixture tests/fixtures/pbt_tiny, its trial e92ca_00000 as the one model.

Judge phase: learned's best (seed 2, 0.55 under AutoAttack fast) judged again: 0.51 under the
standard AutoAttack (``JUDGED``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

PBT_FIXTURE = Path(__file__).parent / "fixtures" / "pbt_tiny"
ROBUST = {"fixed": [0.40, 0.42, 0.44], "learned": [0.50, 0.53, 0.55], "tuned": [0.41, 0.41, 0.99]}
CONTRASTS = [["learned", "fixed", "does learning beat the default?"], ["tuned", "fixed", "does tuning help?"],
             ["searched", "learned", "equal cost (b)"]]
JUDGED = {"arm": "learned", "model": "learned-s2", "first": 0.55, "again": 0.51}


def _trial(exp: Path, tid: str, config: dict, eps_by_round, final_robust: float, rounds: int = 3) -> None:
    folder = exp / f"metaadv_trial_{tid}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(config))
    rows = [{"round": r, "val/robust_acc": final_robust * r / rounds, "val/clean_acc": 0.9, "train/loss": 1.0 / r,
             "hp/eps": eps_by_round[r - 1], "hp/steps": 3, "hp/step_size": 0.25 * eps_by_round[r - 1],
             "hp/lr": config.get("lr", 1e-3), "cost/grad_evals": 1000 * r, "cost/eval_grad_evals": 100 * r,
             "training_iteration": r, "trial_id": tid} for r in range(1, rounds + 1)]
    pd.DataFrame(rows).to_csv(folder / "progress.csv", index=False)


def _eval(root: Path, arm: str, model: str, robust: float, trusted: bool | None = None, folder: str = "eval",
          aa_version: str = "fast") -> str:
    path = root / folder / arm / f"{model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"clean_acc": 0.95, "robust_acc": robust, "per_attack": {"pgd": robust + 0.01, "autoattack": robust},
              "eps": 0.3, "norm": "linf", "n": 100, "attacks": {"autoattack": {"version": aa_version}},
              "checks": {"pgd_beats_fgsm": {"passed": True, "detail": "ok"}}}
    if trusted is not None:
        report["trusted"] = trusted
    path.write_text(json.dumps(report))
    return str(path.relative_to(root))


def build_study(root: Path) -> Path:
    study = root / "lvs-tiny"
    models = []
    base = {"kind": "train", "method": "pgd-at", "dataset": "digits", "eps": 0.3, "lr": 1e-3}
    for arm, controller, eps in (("fixed", "schedule", [0.1, 0.2, 0.3]), ("learned", "policy", [0.3, 0.15, 0.075])):
        for seed in range(3):
            tid = f"{arm[:2]}000_{seed:05d}"
            _trial(study / "arms" / arm / arm, tid, {**base, "seed": seed, "controller": controller}, eps, ROBUST[arm][seed])
            models.append({"arm": arm, "model": f"{arm}-s{seed}", "seed": seed, "experiment": arm, "trial": tid,
                           "checkpoint": "x", "eval": _eval(study, arm, f"{arm}-s{seed}", ROBUST[arm][seed])})
    for i, (eps, lr) in enumerate([(0.1, 3e-3), (0.2, 1e-4), (0.3, 1e-3), (0.15, 2e-4), (0.25, 2e-3)]):
        _trial(study / "arms" / "tuned" / "search", f"se000_{i:05d}", {**base, "eps": eps, "lr": lr}, [eps] * 3, 0.2 + eps)
    for seed in range(3):
        tid = f"re000_{seed:05d}"
        _trial(study / "arms" / "tuned" / "rerun", tid, {**base, "seed": seed, "eps": 0.3}, [0.3] * 3, ROBUST["tuned"][seed])
        models.append({"arm": "tuned", "model": f"tuned-s{seed}", "seed": seed, "experiment": "rerun", "trial": tid,
                       "checkpoint": "x", "eval": _eval(study, "tuned", f"tuned-s{seed}", ROBUST["tuned"][seed],
                                                        trusted=False if seed == 2 else None)})
    for m in models:
        m["judge"] = (_eval(study, m["arm"], m["model"], JUDGED["again"], trusted=True, folder="judge", aa_version="standard")
                      if m["model"] == JUDGED["model"] else "")
    shutil.copytree(PBT_FIXTURE, study / "arms" / "searched" / "pbt_tiny")
    models.append({"arm": "searched", "model": "searched-s0", "seed": 0, "experiment": "pbt_tiny", "trial": "e92ca_00000",
                   "checkpoint": "x", "eval": _eval(study, "searched", "searched-s0", 0.6)})
    pd.DataFrame(models).to_csv(study / "models.csv", index=False)
    arms = {"fixed": (False, ["fixed"], "single"), "learned": (True, ["learned"], "single"),
            "tuned": (True, ["search", "rerun"], "tuned"), "searched": (True, ["pbt_tiny"], "searched")}
    (study / "study.json").write_text(json.dumps({
        "study": "learned_vs_searched", "size": "tiny", "commit": "test", "created": "now", "budget_grad_evals": 3000,
        "eps": 0.3, "val_eps": 0.2, "precision": "fp32", "evaluation": {"n": 100, "aa_version": "fast"},
        "arms": {a: {"description": a, "kind": k, "decision_validation": dv, "experiments": e}
                 for a, (dv, e, k) in arms.items()},
        "pbt": {"time_attr": "cost/grad_evals", "perturbation_interval": 3000, "burn_in_period": 0},
        "contrasts": CONTRASTS}))
    return study
