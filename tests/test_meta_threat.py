"""The meta-test's threat model: the eps sweep, support attacks (theta and unrolled), restarts, AutoAttack."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaadv.cli import main
from metaadv.meta import MetaConfig, Task, adapt, evaluate_task, evaluate_tasks, forward, load_meta_data, meta_parameters, run_meta
from metaadv.meta.metatest import chance_crossing
from metaadv.meta.support_attacks import attack_support, unrolled_objective

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels

TINY = dict(dataset="digits", ways=3, shots=1, queries=3, meta_batch=2, rounds=1, steps_per_round=20, inner_steps=1,
            inner_lr=0.3, meta_lr=3e-3, val_tasks=1, val_pgd_steps=1, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MAML run on digits (20 outer steps): enough that attacks have accuracy to take away."""
    out = tmp_path_factory.mktemp("meta") / "run"
    run = run_meta(MetaConfig.from_dict(TINY), out)
    return out, run.learner.model.eval()


@pytest.fixture(scope="module")
def test_tasks():
    return load_meta_data("digits", splits=("test",)).pools["test"].sample_many(12, 3, 1, 3, seed=3)


def test_sweep_is_non_increasing_in_eps_and_starts_at_clean(trained, test_tasks):
    _, model = trained
    result = evaluate_tasks(model, test_tasks, eps=[0.3, 0.0, 0.1, 0.05, 0.2], inner_steps=1, inner_lr=0.3, pgd_steps=5)
    assert result.eps == (0.0, 0.05, 0.1, 0.2, 0.3)  # sorted, whatever order they came in
    means = [row["robust_acc"] for row in result.sweep()]
    assert means[0] == pytest.approx(sum(result.clean) / len(result.clean))  # eps 0: no attack
    for t in range(len(test_tasks)):  # per task too, not only on average
        per_task = [result.robust_by_eps[e][t] for e in result.eps]
        assert all(a >= b for a, b in zip(per_task, per_task[1:])), per_task
    assert means[-1] < means[0]  # the attack does take accuracy away


def test_chance_crossing_reads_the_sweep_from_the_low_end():
    sweep = [{"eps": 0.05, "robust_acc": 0.60, "robust_ci95": 0.05}, {"eps": 0.1, "robust_acc": 0.40, "robust_ci95": 0.05},
             {"eps": 0.2, "robust_acc": 0.36, "robust_ci95": 0.05}, {"eps": 0.3, "robust_acc": 0.40, "robust_ci95": 0.01}]
    # 0.40 - 0.05 = 0.35 > 1/3; 0.36 - 0.05 = 0.31 is not: the crossing is between 0.1 and 0.2.
    assert chance_crossing(sweep, 1 / 3) == {"chance": 1 / 3, "above_chance_up_to": 0.1, "first_not_above_chance": 0.2}
    assert chance_crossing(sweep[:1], 0.7)["above_chance_up_to"] is None
    assert chance_crossing(sweep[:2], 0.2)["first_not_above_chance"] is None


def _hand_adapted_query_loss(W, b, xs, task, alpha):
    """One inner SGD step of a linear softmax model on support xs, then the clean-query loss."""
    logits = xs.flatten(1) @ W.T + b
    d = (torch.softmax(logits, 1) - F.one_hot(task.ys, 3).to(logits.dtype)) / len(task.ys)
    W1, b1 = W - alpha * d.T @ xs.flatten(1), b - alpha * d.sum(0)
    return F.cross_entropy(task.xq.flatten(1) @ W1.T + b1, task.yq)


def test_unrolled_support_gradient_matches_finite_differences_through_the_inner_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    g = torch.Generator().manual_seed(1)
    xs, xq = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64), torch.rand(6, 1, 2, 2, generator=g, dtype=torch.float64)
    task = Task(xs, torch.arange(3), xq, torch.arange(3).repeat_interleave(2), torch.arange(3), torch.zeros(3, dtype=torch.long))
    theta = {k: p.detach() for k, p in meta_parameters(model).items()}
    W, b, alpha = theta["1.weight"], theta["1.bias"], 2.0
    x = xs.clone().requires_grad_(True)
    loss = unrolled_objective(model, theta, x, task, inner_steps=1, inner_lr=alpha)
    assert loss.item() == pytest.approx(_hand_adapted_query_loss(W, b, xs, task, alpha).item(), abs=1e-12)
    (grad,) = torch.autograd.grad(loss, x)
    numeric, h = torch.zeros_like(xs), 1e-6
    for i in range(xs.numel()):
        e = torch.zeros_like(xs).flatten()
        e[i] = h
        e = e.view_as(xs)
        numeric.view(-1)[i] = (_hand_adapted_query_loss(W, b, xs + e, task, alpha)
                               - _hand_adapted_query_loss(W, b, xs - e, task, alpha)) / (2 * h)
    assert grad.abs().sum() > 0 and torch.allclose(grad, numeric, atol=1e-8)


def _adapted_query_loss(model, task, xs):
    theta = {k: p.detach() for k, p in meta_parameters(model).items()}
    adapted = adapt(model, theta, xs, task.ys, steps=1, lr=0.3)
    with torch.no_grad():
        return F.cross_entropy(forward(model, adapted, task.xq), task.yq).item()


def test_unrolled_support_attack_hurts_the_adapted_model_more_than_the_theta_attack(trained, test_tasks):
    _, model = trained
    theta = {k: p.detach() for k, p in meta_parameters(model).items()}
    g = torch.Generator().manual_seed(0)
    losses = {"none": 0.0, "theta": 0.0, "unrolled": 0.0}
    for task in test_tasks:
        losses["none"] += _adapted_query_loss(model, task, task.xs)
        for mode in ("theta", "unrolled"):
            xs, _ = attack_support(mode, model, theta, task, eps=0.2, steps=5, norm="linf", inner_steps=1, inner_lr=0.3,
                                   generator=g)
            assert (xs - task.xs).abs().max() <= 0.2 + 1e-6 and xs.min() >= 0 and xs.max() <= 1
            losses[mode] += _adapted_query_loss(model, task, xs)
    assert losses["unrolled"] > losses["theta"] and losses["unrolled"] > losses["none"], losses


def test_support_attacks_never_read_as_more_robust_and_count_their_passes(trained, test_tasks):
    _, model = trained
    kw = dict(inner_steps=1, inner_lr=0.3, eps=0.15, pgd_steps=4)
    res = {m: evaluate_tasks(model, test_tasks, support_attack=m, **kw) for m in ("none", "theta", "unrolled")}
    none, theta, unrolled = (sum(res[m].robust) for m in ("none", "theta", "unrolled"))
    assert unrolled <= none and theta <= none
    assert res["none"].clean == res["unrolled"].clean  # clean accuracy: clean support, clean queries
    n_s, n_q, task = 3, 9, test_tasks[0]
    scores = evaluate_task(model, task, support_attack="unrolled", pgd_restarts=2, **kw)
    # adapt (clean) + unrolled PGD (4 x (1 adapt + 1 query pass)) + adapt (attacked) + PGD-4 x 2 restarts
    # on each model, against the queries still unbroken (between 0 and n_q per model)
    attacked, rest = divmod(scores.passes - (n_s + 4 * (n_s + n_q) + n_s), 4 * 2)
    assert rest == 0 and 0 <= attacked <= 2 * n_q


def test_the_eps_sweep_attacks_only_the_queries_a_smaller_eps_left_unbroken(trained, test_tasks):
    _, model = trained
    eps, n_s, n_q = (0.02, 0.1, 0.3), 3, 9
    for task in test_tasks[:4]:
        s = evaluate_task(model, task, inner_steps=1, inner_lr=0.3, eps=eps, pgd_steps=4, pgd_restarts=2)
        unbroken_before = [s.clean, s.robust[0.02], s.robust[0.1]]  # fractions of the n_q queries
        assert s.passes == n_s + round(4 * 2 * n_q * sum(unbroken_before))
        assert s.robust[0.3] <= s.robust[0.1] <= s.robust[0.02] <= s.clean


def test_meta_evaluate_cli_sweep_per_task_csv_and_bad_input(trained, tmp_path, capsys):
    run_dir, _ = trained
    csv_path = tmp_path / "tasks.csv"
    argv = ["meta-evaluate", str(run_dir), "--tasks", "4", "--pgd-steps", "2", "--eps", "0.1", "0.05", "--device", "cpu"]
    assert main([*argv, "--json", "--per-task", str(csv_path), "--support-attack", "unrolled"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["eps"] == [0.05, 0.1] and [row["eps"] for row in r["sweep"]] == [0.05, 0.1]
    assert r["chance"] == pytest.approx(1 / 3) and r["support_attack"] == "unrolled"
    assert r["robust_acc"] == r["sweep"][-1]["robust_acc"]
    import pandas as pd

    frame = pd.read_csv(csv_path)
    assert len(frame) == 8 and set(frame["eps"]) == {0.05, 0.1} and (frame["method"] == "maml").all()
    assert frame.groupby("eps")["robust_acc"].mean()[0.1] == pytest.approx(r["robust_acc"])
    assert main(argv) == 0
    assert "robust accuracy" in capsys.readouterr().out
    # --label renames the checkpoint's rows, so two variants of one method pair up as two arms
    assert main([*argv, "--json", "--per-task", str(csv_path), "--label", "maml_b"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "maml" and r["label"] == "maml_b" and (pd.read_csv(csv_path)["method"] == "maml_b").all()
    for bad, message in ((["--label", "a,b"], "--label must be a non-empty name"),
                         (["--label", " "], "--label must be a non-empty name"),
                         (["--autoattack-eps", "0.3"], "must be one of the --eps values"),
                         (["--attack-support", "--support-attack", "unrolled"], "conflicts"),
                         (["--per-task", str(tmp_path / "no" / "t.csv")], "its folder does not exist"),
                         (["--pgd-restarts", "0"], "pgd_restarts must be >= 1")):
        assert main([*argv, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_autoattack_on_the_adapted_model_is_no_weaker_than_pgd(tmp_path):
    pytest.importorskip("pyautoattack")
    run_meta(MetaConfig.from_dict({**TINY, "ways": 4, "steps_per_round": 5}), tmp_path / "run")
    from metaadv.meta import meta_test

    # PGD-2 is weak on purpose: at eps 0.1 it leaves queries for AutoAttack to break.
    r = meta_test(tmp_path / "run", tasks=3, eps=[0.05, 0.1], pgd_steps=2, autoattack_eps=0.1, aa_tasks=2, device="cpu")
    assert r["aa_components"] == ["apgd-ce", "apgd-dlr", "apgd-t"] and r["aa_tasks"] == 2
    assert r["aa_robust_acc"] <= r["aa_pgd_robust_acc"]
