"""Mathematical properties of the inner loop and the meta-updates, on tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaadv.meta import FunctionalModel, MetaContext, MetaHParams, Task, adapt, build_meta_model, forward
from metaadv.meta import make_transductive, meta_parameters
from metaadv.attacks import pgd
from metaadv.meta import MetaConfig
from metaadv.meta.algorithms import adml_step, aq_step, maml_step, reptile_step
from metaadv.models import DigitsNet

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels



def _task(ways=3, shots=2, queries=3, size=8, seed=0, dtype=torch.float32) -> Task:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(ways * shots, 1, size, size, generator=g, dtype=dtype)
    xq = torch.rand(ways * queries, 1, size, size, generator=g, dtype=dtype)
    ys, yq = torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)
    return Task(xs, ys, xq, yq, torch.arange(ways), torch.zeros(ways, dtype=torch.long))


def _linear(dtype=torch.float32, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).to(dtype)


def _digits_net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return DigitsNet(num_classes=3)


def test_functional_clone_matches_module():
    model, x = _digits_net(), _task().xq
    clone = {k: p.detach().clone() for k, p in meta_parameters(model).items()}
    assert torch.equal(forward(model, clone, x), model(x))
    assert torch.equal(FunctionalModel(model, clone)(x), model(x))


def test_one_inner_step_lowers_support_loss_and_leaves_module_alone():
    model, task = _digits_net(), _task()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    theta = meta_parameters(model)
    adapted = adapt(model, theta, task.xs, task.ys, steps=1, lr=0.1)
    loss_before = F.cross_entropy(forward(model, theta, task.xs), task.ys)
    loss_after = F.cross_entropy(forward(model, adapted, task.xs), task.ys)
    assert loss_after < loss_before
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())


def test_second_order_meta_gradient_reaches_every_parameter_and_differs_from_first_order():
    task, hp = _task(), MetaHParams(inner_steps=2, inner_lr=0.1)
    grads = {}
    for first_order in (False, True):
        model = _digits_net()
        maml_step(model, task, hp, MetaContext(first_order=first_order)).loss.backward()
        grads[first_order] = {k: p.grad.clone() for k, p in model.named_parameters()}
    for name, g in grads[False].items():
        assert g.abs().sum() > 0, f"no meta-gradient reached {name}"
    assert any(not torch.allclose(grads[False][k], grads[True][k]) for k in grads[False])


def _hand_ce_grads(W, b, x, y):
    """Gradients of mean cross-entropy of logits x W^T + b, written out: (softmax - onehot) / B."""
    x = x.flatten(1)
    p = torch.softmax(x @ W.T + b, dim=1)
    d = (p - F.one_hot(y, W.shape[0]).to(p.dtype)) / len(y)
    return d.T @ x, d.sum(0)


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_maml_matches_hand_computation(steps):
    model, task, alpha = _linear(torch.float64), _task(size=2, dtype=torch.float64), 0.5
    W, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    for _ in range(steps):
        gW, gb = _hand_ce_grads(W, b, task.xs, task.ys)
        W, b = W - alpha * gW, b - alpha * gb
    # First-order: the meta-gradient is the query gradient at the adapted weights.
    expect_W, expect_b = _hand_ce_grads(W, b, task.xq, task.yq)
    out = maml_step(model, task, MetaHParams(inner_steps=steps, inner_lr=alpha), MetaContext(first_order=True))
    out.loss.backward()
    assert torch.allclose(model[1].weight.grad, expect_W, atol=1e-12)
    assert torch.allclose(model[1].bias.grad, expect_b, atol=1e-12)


def test_second_order_maml_matches_finite_differences():
    model, task, alpha = _linear(torch.float64), _task(size=2, dtype=torch.float64), 0.5
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def outer_loss(flat):
        W, b = flat[:12].view(3, 4), flat[12:]
        gW, gb = _hand_ce_grads(W, b, task.xs, task.ys)
        W1, b1 = W - alpha * gW, b - alpha * gb
        return F.cross_entropy(task.xq.flatten(1) @ W1.T + b1, task.yq)

    h, numeric = 1e-6, torch.zeros_like(theta)
    for i in range(len(theta)):
        e = torch.zeros_like(theta)
        e[i] = h
        numeric[i] = (outer_loss(theta + e) - outer_loss(theta - e)) / (2 * h)
    maml_step(model, task, MetaHParams(inner_steps=1, inner_lr=alpha), MetaContext()).loss.backward()
    analytic = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(analytic, numeric, atol=1e-7)


def test_reptile_meta_gradient_is_theta_minus_phi():
    model, task, alpha = _linear(torch.float64), _task(size=2, dtype=torch.float64), 0.3
    W, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    x, y = torch.cat([task.xs, task.xq]), torch.cat([task.ys, task.yq])
    gW, gb = _hand_ce_grads(W, b, x, y)  # one step: theta - phi = alpha * grad
    out = reptile_step(model, task, MetaHParams(inner_steps=1, inner_lr=alpha), MetaContext())
    assert torch.allclose(out.meta_grad["1.weight"], alpha * gW, atol=1e-12)
    assert torch.allclose(out.meta_grad["1.bias"], alpha * gb, atol=1e-12)
    assert out.passes == len(y)


def _one_update(step_fn, hp, task, ctx=None):
    model = _digits_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step_fn(model, task, hp, ctx or MetaContext()).loss.backward()
    opt.step()
    return [p.detach() for p in model.parameters()]


def test_adml_with_eps_zero_is_maml_on_clean_data():
    task = _task()
    hp = MetaHParams(inner_steps=2, eps=0.0, beta1=0.5, beta2=0.5)
    maml, adml = _one_update(maml_step, hp, task), _one_update(adml_step, hp, task)
    assert all(torch.allclose(a, m, atol=1e-6) for a, m in zip(adml, maml))
    attacked = _one_update(adml_step, hp.replace(eps=0.3), task)
    assert any(not torch.allclose(a, m, atol=1e-6) for a, m in zip(attacked, maml))


def test_adml_counts_attack_and_both_inner_loops():
    task, hp = _task(), MetaHParams(inner_steps=2, eps=0.1)
    n_s, n_q = len(task.ys), len(task.yq)
    assert adml_step(_digits_net(), task, hp, MetaContext()).passes == (n_s + n_q) + 2 * 2 * n_s + 2 * n_q
    pgd_ctx = MetaContext(attack="pgd", attack_steps=3, generator=torch.Generator().manual_seed(0))
    assert adml_step(_digits_net(), task, hp, pgd_ctx).passes == 3 * (n_s + n_q) + 2 * 2 * n_s + 2 * n_q
    assert maml_step(_digits_net(), task, hp, MetaContext()).passes == 2 * n_s + n_q


def _hand_fgsm(W, b, x, y, eps):
    """FGSM on a linear softmax model, written out: the input gradient of example i is (p_i - onehot_i) W."""
    flat = x.flatten(1)
    p = torch.softmax(flat @ W.T + b, dim=1)
    grad = (p - F.one_hot(y, W.shape[0]).to(p.dtype)) @ W
    return (flat + eps * grad.sign()).clamp(0, 1)


def test_aq_outer_gradient_is_mamls_on_queries_attacked_against_the_adapted_model():
    """Goldblum et al. 2020, Algorithm 1, by hand: theta' from the clean support, FGSM queries against
    theta', and the outer gradient of CE(theta'(theta), x_adv) with x_adv held constant."""
    model, task, alpha, eps = _linear(torch.float64), _task(size=2, dtype=torch.float64), 0.5, 0.1
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def adapted(flat):
        W, b = flat[:12].view(3, 4), flat[12:]
        gW, gb = _hand_ce_grads(W, b, task.xs, task.ys)
        return W - alpha * gW, b - alpha * gb

    x_adv = _hand_fgsm(*adapted(theta), task.xq, task.yq, eps)  # against theta', not theta
    assert not torch.allclose(x_adv, _hand_fgsm(model[1].weight.detach(), model[1].bias.detach(), task.xq, task.yq, eps))

    def outer_loss(flat, queries):
        W1, b1 = adapted(flat)
        return F.cross_entropy(queries @ W1.T + b1, task.yq)

    def numeric_grad(queries):
        h, out = 1e-6, torch.zeros_like(theta)
        for i in range(len(theta)):
            e = torch.zeros_like(theta)
            e[i] = h
            out[i] = (outer_loss(theta + e, queries) - outer_loss(theta - e, queries)) / (2 * h)
        return out

    hp, ctx = MetaHParams(inner_steps=1, inner_lr=alpha, eps=eps), MetaContext(attack="fgsm")
    out = aq_step(model, task, hp, ctx)
    assert out.loss.item() == pytest.approx(outer_loss(theta, x_adv).item(), abs=1e-12)
    out.loss.backward()
    analytic = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(analytic, numeric_grad(x_adv), atol=1e-7)
    # ... and it is not MAML's gradient on the clean queries.
    assert not torch.allclose(analytic, numeric_grad(task.xq.flatten(1)), atol=1e-4)
    assert out.passes == len(task.ys) + 1 * len(task.yq) + len(task.yq)


def test_aq_attacks_the_queries_with_pgd_against_the_adapted_model_and_counts_it():
    model, task = _digits_net(), _task()
    hp = MetaHParams(inner_steps=2, inner_lr=0.1, eps=0.2)
    ctx = MetaContext(attack="pgd", attack_steps=3, step_ratio=0.5, generator=torch.Generator().manual_seed(5))
    out = aq_step(model, task, hp, ctx)
    adapted = {k: p.detach() for k, p in adapt(model, meta_parameters(model), task.xs, task.ys, steps=2, lr=0.1).items()}
    x_adv = pgd(FunctionalModel(model, adapted), task.xq, task.yq, eps=0.2, step_size=0.1, steps=3,
                generator=torch.Generator().manual_seed(5))
    expected = F.cross_entropy(forward(model, adapted, x_adv), task.yq)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() > F.cross_entropy(forward(model, adapted, task.xq), task.yq).item()
    n_s, n_q = len(task.ys), len(task.yq)
    assert out.passes == 2 * n_s + 3 * n_q + n_q
    hp0 = hp.replace(eps=0.0)  # no attack: MAML's update exactly
    assert all(torch.allclose(a, m) for a, m in zip(_one_update(aq_step, hp0, task), _one_update(maml_step, hp0, task)))


def test_aq_defaults_to_pgd_as_in_the_paper():
    assert MetaConfig.from_dict({"method": "aq"}).attack == "pgd"
    assert MetaConfig.from_dict({"method": "aq", "attack": "fgsm"}).attack == "fgsm"
    assert MetaConfig.from_dict({"method": "adml"}).attack == "fgsm"


def test_batchnorm_is_transductive_and_keeps_no_state():
    torch.manual_seed(0)
    model = make_transductive(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                            nn.Linear(4 * 6 * 6, 3)))
    assert not any("running" in k or "num_batches" in k for k in model.state_dict())
    task_a, task_b = _task(seed=1), _task(seed=2)
    reference = forward(model, meta_parameters(model), task_b.xq).detach()
    # Adapting on, and evaluating, another task first changes nothing for task B, in either mode.
    adapt(model, meta_parameters(model), task_a.xs, task_a.ys, steps=2, lr=0.1)
    model(task_a.xq)
    model.eval()
    assert torch.equal(forward(model, meta_parameters(model), task_b.xq).detach(), reference)
    copy.deepcopy(model)  # still an ordinary module
    resnet = build_meta_model("preact-resnet18", {"in_channels": 1, "num_classes": 3, "image_size": 28,
                                                   "mean": [0.1], "std": [0.3]})
    assert not any("running" in k for k in resnet.state_dict())
