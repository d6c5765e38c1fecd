"""Paired few-shot comparisons on a hand-built per-task frame, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.fewshot import compare, method_table, paired_task_diff


# robust_acc[method][train_seed] per task 0..3, at eps 0.1
A = {0: [1, 1, 0, 1], 1: [1, 0, 0, 1], 2: [1, 1, 1, 1]}
B = {0: [0, 1, 0, 0], 1: [1, 0, 0, 0], 2: [0, 1, 0, 1]}
T3, T2 = 3.182446305, 4.302652730  # Student's t 0.975 quantiles, 3 and 2 degrees of freedom


def _frame(a=A, b=B) -> pd.DataFrame:
    rows = []
    for method, table in (("aq", a), ("maml", b)):
        for seed, accs in table.items():
            for task, acc in enumerate(accs):
                for eps, value in ((0.1, acc), (0.2, 0.0)):  # another eps that must not leak in
                    rows.append({"method": method, "train_seed": seed, "dataset": "mnist5k-rot", "ways": 3,
                                 "shots": 1, "task": task, "eps": eps, "clean_acc": 1.0, "robust_acc": value,
                                 "aa_robust_acc": math.nan})
    rows.append({**rows[0], "ways": 5, "robust_acc": 0.0})  # another task shape, filtered out by ways=3
    return pd.DataFrame(rows)


def test_task_level_paired_difference_by_hand():
    # per task, seed means: aq 1, 2/3, 1/3, 1; maml 1/3, 2/3, 0, 1/3 -> differences 2/3, 0, 1/3, 2/3
    d = paired_task_diff(_frame(), "aq", "maml", eps=0.1, ways=3)
    sd = math.sqrt(((1 / 4) ** 2 + (5 / 12) ** 2 + (1 / 12) ** 2 + (1 / 4) ** 2) / 3)
    assert d["n"] == 4 and d["mean"] == pytest.approx(5 / 12)
    assert d["half"] == pytest.approx(T3 * sd / 2) and d["lo"] == pytest.approx(5 / 12 - T3 * sd / 2)


def test_seed_level_difference_and_the_verdict_by_hand():
    c = compare(_frame(), "aq", "maml", eps=0.1, ways=3)
    # per seed, task means: aq 3/4, 1/2, 1; maml 1/4, 1/4, 1/2 -> differences 1/2, 1/4, 1/2
    sd = math.sqrt(((1 / 12) ** 2 + (1 / 6) ** 2 + (1 / 12) ** 2) / 2)
    assert c["seed_n"] == 3 and c["seed_mean"] == pytest.approx(5 / 12)
    assert c["seed_lo"] == pytest.approx(5 / 12 - T2 * sd / math.sqrt(3))
    assert c["diff"] == pytest.approx(5 / 12) and c["task_n"] == 4
    assert not c["decided"]  # the task-level interval reaches below zero
    zero = {s: [0, 0, 0, 0] for s in B}
    clear = compare(_frame(b=zero), "aq", "maml", eps=0.1, ways=3)
    # differences per task 1, 2/3, 1/3, 1 (mean 3/4); per seed 3/4, 1/2, 1 (mean 3/4, sd 1/4)
    assert clear["task_lo"] == pytest.approx(0.75 - T3 * math.sqrt(((1 / 4) ** 2 + (1 / 12) ** 2 + (5 / 12) ** 2 + (1 / 4) ** 2) / 3) / 2)
    assert clear["seed_lo"] == pytest.approx(0.75 - T2 * 0.25 / math.sqrt(3)) and clear["decided"]
    assert not compare(_frame(b=zero), "maml", "aq", eps=0.1, ways=3)["seed_lo"] > 0  # direction matters


def test_missing_metric_and_method_table():
    assert math.isnan(paired_task_diff(_frame(), "aq", "maml", eps=0.1, metric="aa_robust_acc", ways=3)["mean"])
    table = method_table(_frame()[lambda f: f["ways"] == 3])
    row = table[(table["method"] == "aq") & (table["eps"] == 0.1)].iloc[0]
    assert row["mean"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3) and row["seeds"] == 3 and row["tasks"] == 4


def test_equal_differences_written_from_float32_show_no_spread(tmp_path):
    """aq leads maml by exactly 1/3 on every seed, from different task accuracies: float32 noise
    (about 1e-8) must not make that a spread a t-test calls certain."""
    import numpy as np

    from analysis.fewshot import load_per_task

    f32 = lambda x: float(np.float32(x))  # noqa: E731  (what meta-evaluate writes)
    per_seed = {0: ([2 / 3, 2 / 3], [1 / 3, 1 / 3]), 1: ([1.0, 1 / 3], [2 / 3, 0.0]), 2: ([1 / 3, 1.0], [0.0, 2 / 3])}
    rows = [{"method": m, "train_seed": s, "dataset": "mnist5k-rot", "ways": 3, "shots": 1, "task": t, "eps": 0.2,
             "clean_acc": 1.0, "robust_acc": f32(acc), "aa_robust_acc": math.nan}
            for s, pair in per_seed.items() for m, accs in zip(("aq", "maml"), pair) for t, acc in enumerate(accs)]
    pd.DataFrame(rows).to_csv(tmp_path / "tasks.csv", index=False)
    c = compare(load_per_task([tmp_path / "tasks.csv"]), "aq", "maml", eps=0.2)
    assert c["seed_mean"] == pytest.approx(1 / 3) and c["seed_n"] == 3
    assert c["seed_p"] == 1.0 and not c["decided"]


def test_below_three_seeds_the_few_shot_tables_print_each_seeds_value():
    from analysis.fewshot_report import _seed_list

    two = _frame()[lambda f: (f["ways"] == 3) & (f["train_seed"] < 2)]
    c = compare(two, "aq", "maml", eps=0.1)
    # per seed, task means: aq 3/4, 1/2; maml 1/4, 1/4 -> differences 1/2, 1/4
    assert c["seed_n"] == 2 and _seed_list(c["seed_diffs"], signed=True) == "+50.0, +25.0 (seeds 0, 1)"
    row = method_table(two).query("method == 'aq' and eps == 0.1").iloc[0]
    assert _seed_list(row["seed_values"]) == "75.0, 50.0 (seeds 0, 1)"
    from analysis.fewshot_report import _contrast_table, _study_lines, _sweep_table

    spec = {"study": "s", "contrasts": [["aq", "maml", "q"]], "size_settings": {"seeds": 2},
            "evaluation": {"eps": 0.1, "tasks": 4, "pgd_steps": 2, "pgd_restarts": 1}, "arms": {"aq": {}, "maml": {}}}
    frames = {"sweep": two, "support": two.iloc[0:0]}
    text = "\n".join(_study_lines(spec, _sweep_table("s", frames), _contrast_table("s", spec, frames),
                                  pd.DataFrame(columns=["arm", "outer_steps", "grad_evals"])))
    assert "| 75.0, 50.0 (seeds 0, 1) [+- " in text and "| per seed: +50.0, +25.0 (seeds 0, 1) (2) |" in text
    assert " +- " not in text.split("| aq |")[1].split("\n")[0]  # no seed interval in a 2-seed row
    # An arm planned on more seeds than the size's (arm_seeds) says how many of its own are in.
    spec["arms"] = {"aq": {"planned_models": 4}, "maml": {}}
    text = "\n".join(_study_lines(spec, _sweep_table("s", frames), _contrast_table("s", spec, frames),
                                  pd.DataFrame(columns=["arm", "outer_steps", "grad_evals"])))
    assert "(2 of 4 seeds)" in text.split("| aq |")[1].split("\n")[0]
    assert "of 2 seeds" not in text.split("| maml |")[1].split("\n")[0]
