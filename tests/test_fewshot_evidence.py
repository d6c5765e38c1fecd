"""Issue 23's few-shot evidence: the same PGD starts per task for every model, Square in the
meta-test's per-example worst case, the declared contrasts Holm-adjusted at eps 0.1 and 0.2 only,
a verdict rule that names no arm at or below chance, and the study's declared aim."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pandas as pd
import pytest
import torch
from scipy import stats as sps
from torch import nn

from metaadv.attacks import noise
from metaadv.errors import UserError
from metaadv.meta import Task, evaluate_task, evaluate_tasks
from metaadv.meta.evaluate import task_start_seed

pgd_module = importlib.import_module("metaadv.attacks.pgd")  # the module (the package exports the function as pgd)
WAYS, QUERIES = 3, 5


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, WAYS))


def _tasks(n: int, seed: int = 0) -> list[Task]:
    g = torch.Generator().manual_seed(seed)
    ys, yq = torch.arange(WAYS), torch.arange(WAYS).repeat_interleave(QUERIES)
    classes = torch.arange(WAYS)
    return [Task(torch.rand(WAYS, 1, 4, 4, generator=g), ys, torch.rand(WAYS * QUERIES, 1, 4, 4, generator=g), yq,
                 classes, torch.zeros(WAYS, dtype=torch.long)) for _ in range(n)]


@pytest.fixture
def starts(monkeypatch):
    """Every PGD start the meta-test draws: (generator seed, query row) -> that row's start."""
    seen: list[dict] = []
    real = pgd_module.random_start

    def spy(x, eps, norm, generator):
        delta = real(x, eps, norm, generator)
        ctx = noise._CURRENT.get()  # the query rows being attacked (without it, the subset's own positions)
        rows = ctx.rows.tolist() if ctx is not None and ctx.rows is not None else list(range(len(x)))
        seen[-1].update({(generator.initial_seed(), r): delta[i].clone() for i, r in enumerate(rows)})
        return delta

    monkeypatch.setattr(pgd_module, "random_start", spy)

    def record(fn, *args, **kwargs):
        seen.append({})
        return fn(*args, **kwargs), seen[-1]

    return record


KW = dict(inner_steps=1, inner_lr=0.5, eps=[0.1, 0.3], pgd_steps=2, pgd_restarts=2)


def test_two_models_meet_the_same_pgd_starts_on_the_same_task(starts):
    tasks = _tasks(4)
    (res_a, seen_a), (res_b, seen_b) = (starts(evaluate_tasks, _model(s), tasks, **KW) for s in (1, 2))
    assert res_a.clean != res_b.clean  # different models: different queries left unbroken to attack
    shared = set(seen_a) & set(seen_b)
    assert len(shared) >= 5 and set(seen_a) != set(seen_b)
    for key in shared:  # the same query of the same task, eps and restart: the same start
        assert torch.equal(seen_a[key], seen_b[key]), key


def test_a_tasks_starts_and_result_do_not_depend_on_the_tasks_before_it(starts):
    model, (t0, t1, t2) = _model(3), _tasks(3)
    (after_t0, seen_0), (after_t2, seen_2) = (starts(evaluate_tasks, model, [first, t1], **KW) for first in (t0, t2))
    (alone, seen_alone) = starts(evaluate_task, model, t1, start_seed=task_start_seed(0, 1), **KW)
    for e in (0.1, 0.3):
        assert after_t0.robust_by_eps[e][1] == after_t2.robust_by_eps[e][1] == alone.robust[e]
    assert seen_alone and all(torch.equal(seen_0[k], v) and torch.equal(seen_2[k], v) for k, v in seen_alone.items())


def test_square_can_only_lower_robust_accuracy_and_enters_the_worst_case():
    pytest.importorskip("pyautoattack")
    model, tasks = _model(4), _tasks(3, seed=5)
    kw = dict(inner_steps=1, inner_lr=0.5, eps=[0.05, 0.15], pgd_steps=1, autoattack_eps=0.15)
    without = evaluate_tasks(model, tasks, **kw)
    with_square = evaluate_tasks(model, tasks, square_queries=30, **kw)
    assert with_square.robust_by_eps == without.robust_by_eps  # PGD unchanged: the same starts
    assert all(s <= w for s, w in zip(with_square.aa_robust, without.aa_robust))
    assert all(a <= p for a, p in zip(with_square.aa_robust, with_square.robust_by_eps[0.15]))


def test_the_meta_verdict_names_square_and_its_worst_case_is_the_headline(tmp_path):
    pytest.importorskip("pyautoattack")
    from metaadv.meta import MetaConfig, run_meta
    from metaadv.study.meta_judge import meta_test_result

    config = dict(dataset="digits", ways=3, shots=1, queries=2, meta_batch=2, rounds=1, steps_per_round=2,
                  inner_steps=1, inner_lr=0.3, val_tasks=1, val_pgd_steps=1, device="cpu")
    run_meta(MetaConfig.from_dict(config), tmp_path / "run")
    options = {"tasks": 2, "sweep": [0.1, 0.2], "pgd_steps": 1, "autoattack_eps": 0.2, "aa_tasks": 2,
               "square_queries": 20, "contrast_eps": [0.1, 0.2], "device": "cpu"}
    r = meta_test_result(tmp_path / "run", tmp_path / "eval" / "m.json", 0.2, options)
    assert r["aa_components"] == ["apgd-ce", "apgd-dlr", "square"] and r["square_queries"] == 20
    assert r["headline_judge"] == "pgd+apgd-ce+apgd-dlr+square"
    assert r["robust_acc"] == r["aa_robust_acc"] <= r["robust_acc_pgd"]
    fewer = meta_test_result(tmp_path / "run", tmp_path / "eval" / "n.json", 0.2, {**options, "aa_tasks": 1})
    assert fewer["headline_judge"] == "pgd" and fewer["robust_acc"] == fewer["robust_acc_pgd"]  # not on every task


@pytest.mark.parametrize("bad, message", [
    ({"autoattack_eps": None, "square_queries": 100}, "square_queries=100"),
    ({"square_queries": 0}, "square_queries=0"),
    ({"contrast_eps": [0.15]}, "contrast_eps=\\[0.15\\]"),
])
def test_bad_square_or_contrast_eps_options_fail_in_one_line(bad, message):
    from tune_experiments.few_shot import STUDY

    s = STUDY.sizes["smoke"]
    with pytest.raises(UserError, match=message) as info:
        STUDY.replace(sizes={**STUDY.sizes, "smoke": dataclasses.replace(s, evaluation={**s.evaluation, **bad})})
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# The analysis: the declared family, Holm, the verdict rule
# ---------------------------------------------------------------------------------------------

# seed differences a - b and a - c per eps (4 seeds); every task shares its seed's difference
D_AB = {0.1: [0.05, 0.01, 0.04, 0.02], 0.2: [0.10, 0.12, 0.11, 0.13], 0.3: [0.30, 0.31, 0.32, 0.33]}
D_AC = {0.1: [0.00, 0.01, -0.01, 0.02], 0.2: [0.20, 0.25, 0.22, 0.21], 0.3: [0.30, 0.31, 0.32, 0.36]}


def _frame(d_ab=D_AB, d_ac=D_AC) -> pd.DataFrame:
    rows = []
    for eps in d_ab:
        for seed in range(4):
            a = 0.5 + 0.01 * seed
            for arm, value in (("a", a), ("b", a - d_ab[eps][seed]), ("c", a - d_ac[eps][seed])):
                for task in range(3):
                    rows.append({"method": arm, "train_seed": seed, "dataset": "d", "ways": 3, "shots": 1, "task": task,
                                 "eps": eps, "clean_acc": 1.0, "robust_acc": value + 0.02 * task,
                                 "aa_robust_acc": math.nan})
    return pd.DataFrame(rows)


SPEC = {"study": "s", "contrasts": [["a", "b", "q1"], ["a", "c", "q2"]], "size_settings": {"seeds": 4},
        "evaluation": {"eps": 0.2, "contrast_eps": [0.1, 0.2], "tasks": 3, "pgd_steps": 1, "pgd_restarts": 1},
        "arms": {"a": {}, "b": {}, "c": {}}}


def _hand_holm(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_holm_adjusts_the_declared_contrasts_at_eps_0_1_and_0_2_only_by_hand():
    from analysis.fewshot_report import _contrast_table

    frame = _frame()
    table = _contrast_table("s", SPEC, {"sweep": frame, "support": frame.iloc[0:0]})
    declared = table[table["family"] == "declared"]
    assert sorted(zip(declared["a"] + "-" + declared["b"], declared["eps"])) == [
        ("a-b", 0.1), ("a-b", 0.2), ("a-c", 0.1), ("a-c", 0.2)]
    raw = [sps.ttest_1samp(d[eps], 0.0).pvalue for d in (D_AB, D_AC) for eps in (0.1, 0.2)]
    expected = _hand_holm(raw)
    got = [declared[(declared["b"] == b) & (declared["eps"] == eps)]["seed_p_holm"].iloc[0]
           for b in ("b", "c") for eps in (0.1, 0.2)]
    assert got == pytest.approx(expected, rel=1e-9)
    assert raw[0] < 0.05 < expected[0]  # a - b at eps 0.1: below 0.05 alone, not after Holm
    decided = {(r.b, r.eps): r.decided for r in declared.itertuples()}
    assert decided == {("b", 0.1): False, ("b", 0.2): True, ("c", 0.1): False, ("c", 0.2): True}
    exploratory = table[table["eps"] == 0.3]
    assert (exploratory["family"] == "exploratory").all() and not exploratory["decided"].any()
    assert exploratory["seed_p_holm"].isna().all() and (exploratory["seed_p"] < 0.01).all()


def test_a_verdict_row_names_no_arm_at_or_below_chance():
    from analysis.fewshot_report import _study_lines, _sweep_table, _verdict_table, most_robust_above_chance

    assert most_robust_above_chance({"fomaml": (0.16, 0.006), "aq": (0.077, 0.008)}, 0.2) is None
    assert most_robust_above_chance({"fomaml": (0.20, 0.0), "aq": (0.19, math.nan)}, 0.2) is None  # at chance
    assert most_robust_above_chance({"fomaml": (0.25, 0.06), "aq": (0.23, 0.01)}, 0.2) == "aq"  # above with its CI
    at_chance = _frame()
    at_chance.loc[at_chance["eps"] == 0.3, "robust_acc"] = 1 / 3  # every arm exactly at chance at eps 0.3
    frames = {"sweep": at_chance, "support": at_chance.iloc[0:0]}
    sweep = _sweep_table("s", frames)
    verdicts = _verdict_table("s", SPEC, frames, sweep)
    by_eps = verdicts.set_index("eps")
    assert pd.isna(by_eps.loc[0.3, "named"]) and by_eps.loc[0.2, "named"] == "a"
    assert by_eps.loc[0.2, "runner_up"] == "b" and by_eps.loc[0.2, "diff"] == pytest.approx(0.115)
    text = "\n".join(_study_lines(SPEC, sweep, _contrast_table_for(frames), pd.DataFrame(
        columns=["arm", "outer_steps", "grad_evals"]), verdicts))
    assert "- 3-way, eps 0.3 (robust, chance 33.3%): no arm is above chance" in text
    assert "most robust above chance is **a**" in text and "| a - b | robust | 0.3 |" in text
    assert "exploratory |" in text.split("| a - b | robust | 0.3 |")[1].split("\n")[0]


def _contrast_table_for(frames):
    from analysis.fewshot_report import _contrast_table

    return _contrast_table("s", SPEC, frames)


def test_the_few_shot_study_declares_its_aim_judge_and_contrast_eps():
    from tune_experiments.few_shot import EPS, STUDY

    labels = {f"{a} - {b}" for a, b, _ in STUDY.contrasts}
    assert STUDY.aim["min_effect"] == 0.05 and set(STUDY.aim["contrasts"]) == {"aq-3way - adml-3way",
                                                                             "aq-5way - adml-5way"} <= labels
    medium = STUDY.sizes["medium"].evaluation
    assert medium["autoattack_eps"] == EPS and medium["aa_tasks"] == medium["tasks"] == 100
    assert medium["square_queries"] >= 1000 and medium["contrast_eps"] == [0.1, EPS]
    assert STUDY.declaration("medium")["aim"] == STUDY.aim  # study.json carries it


@pytest.mark.parametrize("sampler", [torch.rand, torch.randn])
def test_batch_rows_draws_those_rows_of_the_whole_batchs_noise(sampler):
    rows = torch.tensor([1, 4, 5])
    full = sampler((6, 2), generator=torch.Generator().manual_seed(7))
    with noise.batch_rows(rows, 6):
        part = noise.draw(sampler, (3, 2), torch.Generator().manual_seed(7), torch.device("cpu"), torch.float32)
        two = noise.draw(sampler, (6, 2), torch.Generator().manual_seed(7), torch.device("cpu"), torch.float32, copies=2)
    assert torch.equal(part, full[rows])
    full2 = sampler((12, 2), generator=torch.Generator().manual_seed(7))
    assert torch.equal(two, torch.cat([full2[rows], full2[6 + rows]]))
    with pytest.raises(ValueError, match="indices of a batch of 6"):
        with noise.batch_rows(torch.tensor([6]), 6):
            pass


def test_the_sweep_table_says_square_ran():
    from analysis.fewshot_report import _study_lines, _sweep_table

    frame = _frame()
    frame.loc[frame["eps"] == 0.2, "aa_robust_acc"] = frame.loc[frame["eps"] == 0.2, "robust_acc"] - 0.01
    spec = {**SPEC, "evaluation": {**SPEC["evaluation"], "autoattack_eps": 0.2, "aa_tasks": 3, "square_queries": 5000}}
    frames = {"sweep": frame, "support": frame.iloc[0:0]}
    text = "\n".join(_study_lines(spec, _sweep_table("s", frames), _contrast_table_for(frames),
                                  pd.DataFrame(columns=["arm", "outer_steps", "grad_evals"])))
    assert "PGD+AA+Square (5,000 queries) % eps 0.2 (3 tasks)" in text
