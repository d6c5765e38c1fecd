"""Paired few-shot comparisons on a hand-built per-task frame, checked against numbers worked out by hand."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.fewshot import compare, method_table, paired_task_diff


def _benchmark(name: str):
    """A module of benchmarks/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass in it looks its module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module

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


def test_the_reports_cells_say_when_a_seed_is_missing():
    report = _benchmark("meta_learning_report")
    frame = _frame(a={0: A[0], 1: A[1]})  # aq lost seed 2
    table = method_table(frame[frame["ways"] == 3])
    row = {m: table[(table["method"] == m) & (table["eps"] == 0.1)].iloc[0] for m in ("aq", "maml")}
    assert report._cell(row["aq"], 3).endswith("(2 of 3 seeds)")
    assert "seeds" not in report._cell(row["maml"], 3)
    assert report._cell(row["aq"], 3).startswith(f"{100 * (3 / 4 + 2 / 4) / 2:.1f} +- ")


def test_the_tables_arms_train_their_algorithm_and_are_tested_under_their_own_name(tmp_path):
    """adml_pgd is ADML with PGD-7: trained as ``--method adml``, meta-tested as ``--label adml_pgd``."""
    table = _benchmark("meta_learning_table")
    plan = table.SIZES["smoke"]
    train = {Path(cmd[cmd.index("--out") + 1]).parts[-3:]: cmd for cmd, _, _ in table.train_pieces(plan, tmp_path)}
    assert len(train) == len(table.ARMS) * len(plan.seeds) * len(plan.ways)
    pgd = train[("5way", "adml_pgd", "seed0")]
    assert pgd[pgd.index("--method") + 1] == "adml" and pgd[pgd.index("--attack") + 1] == "pgd"
    fgsm = train[("5way", "adml", "seed0")]
    assert fgsm[fgsm.index("--attack") + 1] == "fgsm"
    tests = [cmd for cmd, _, _ in table.test_pieces(plan, tmp_path)]
    labels = {cmd[cmd.index("--label") + 1] for cmd in tests}
    assert labels == set(table.ARMS) and sys.executable == tests[0][0]
    assert len(tests) == 2 * len(table.ARMS) * len(plan.seeds) * len(plan.ways)  # a sweep and an unrolled each
    only_aq = table.train_pieces(plan, tmp_path, ("aq",))  # --arms aq: a table grows one arm at a time
    assert len(only_aq) == len(plan.seeds) * len(plan.ways) and all("aq" in cmd for cmd, _, _ in only_aq)
