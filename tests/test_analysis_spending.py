"""The report's spending table (analysis.spending): epochs bought, the attack trained with (a LAS
strategy's own choices where it acted), and whether the strategy moved."""

from __future__ import annotations

import math

import pandas as pd

from analysis.spending import budget_spending, spending_lines


def _rows(arm: str, model: str, rounds: list[dict]) -> list[dict]:
    step, out = 0, []
    for i, r in enumerate(rounds, 1):
        step += r.pop("steps_run")
        out.append({"arm": arm, "model": model, "report": i, "round": i, "step": step, **r})
    return out


def test_spending_weights_rounds_by_their_steps_and_reads_las_choices_where_the_strategy_acted():
    rows = (_rows("pgd-k", "k-1", [{"steps_run": 10, "epoch": 1.0, "hp/steps": 3, "hp/eps": 0.3},
                                   {"steps_run": 30, "epoch": 4.0, "hp/steps": 3, "hp/eps": 0.3}])
            # LAS: two acting rounds of 10 and 30 steps, then a tail of 10 at the schedule's PGD-10.
            + _rows("las", "las-1", [{"steps_run": 10, "epoch": 0.5, "hp/steps": 10, "hp/eps": 0.3, "las/steps_mean": 2.0,
                                      "las/eps_mean": 0.1, "las/kl": 0.5},
                                     {"steps_run": 30, "epoch": 1.5, "hp/steps": 10, "hp/eps": 0.3, "las/steps_mean": 6.0,
                                      "las/eps_mean": 0.2, "las/kl": 1.0},
                                     {"steps_run": 10, "epoch": 2.0, "hp/steps": 10, "hp/eps": 0.3, "las/kl": 2.0}])
            + _rows("las", "las-2", [{"steps_run": 10, "epoch": 1.0, "hp/steps": 10, "hp/eps": 0.3, "las/steps_mean": 4.0,
                                      "las/eps_mean": 0.3, "las/kl": 0.0}]))
    frame = pd.DataFrame(rows)
    finals = pd.DataFrame([{"arm": a, "model": m} for a, m in (("pgd-k", "k-1"), ("las", "las-1"), ("las", "las-2"))])
    table = budget_spending(frame, finals).set_index("arm")
    assert table.loc["pgd-k", "epochs"] == 4.0 and table.loc["pgd-k", "attack_steps"] == 3.0
    assert math.isnan(table.loc["pgd-k", "las_kl"])
    # las-1: (10 x 2 + 30 x 6 + 10 x 10) / 50 = 6.0 steps; eps (10 x 0.1 + 30 x 0.2 + 10 x 0.3) / 50 = 0.2.
    # las-2: 4 steps, eps 0.3. The arm: their means; the KL: the last logged (2.0 and 0.0), min 0.
    assert table.loc["las", "n_models"] == 2 and table.loc["las", "epochs"] == 1.5
    assert math.isclose(table.loc["las", "attack_steps"], 5.0) and math.isclose(table.loc["las", "train_eps"], 0.25)
    assert table.loc["las", "las_kl"] == 1.0 and table.loc["las", "las_kl_min"] == 0.0
    text = "\n".join(spending_lines(table.reset_index()))
    assert "| las | 2 | 1.50 | 5.0 | 0.250 | 1.00 (0.00) |" in text and "| pgd-k | 1 | 4.00 | 3.0 | 0.300 |  |" in text


def test_a_study_without_training_schedules_has_no_spending_table():
    frame = pd.DataFrame([{"arm": "maml", "model": "m", "report": 1, "round": 1, "step": 5}])
    assert budget_spending(frame, pd.DataFrame([{"arm": "maml", "model": "m"}])).empty
    assert spending_lines(budget_spending(frame, pd.DataFrame())) == []
