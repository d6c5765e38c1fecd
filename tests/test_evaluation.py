"""Robust evaluation: per-example worst case, sanity checks that fire, AutoAttack stays in the ball."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metaadv.data import load_splits
from metaadv.errors import UserError
from metaadv.evaluation import autoattack, checks, evaluate_model, robust, save_examples, within_threat_model, worst_case
from metaadv.evaluation.autoattack import art_available, keep_in_threat_model
from metaadv.models import DigitsNet

needs_art = pytest.mark.skipif(not art_available(), reason="adversarial-robustness-toolbox not installed")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two cores shared with others: more threads than cores makes torch spin, 20x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    s = load_splits("digits")
    return s.train_x, s.train_y, s.test_x[:100], s.test_y[:100]


@pytest.fixture(scope="module")
def cnn(digits):
    """A normally trained small CNN (about 95% clean accuracy): it should pass every check."""
    train_x, train_y, test_x, test_y = digits
    torch.manual_seed(0)
    model = DigitsNet(mean=(0.3,), std=(0.4,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        i = torch.randint(0, len(train_x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(train_x[i]), train_y[i]).backward()
        opt.step()
    model.eval().zero_grad(set_to_none=True)
    with torch.no_grad():
        assert (model(test_x).argmax(1) == test_y).float().mean() > 0.85
    return model


class Wrapped(nn.Module):
    """``inner`` with something done to its input or output, to build models that fail a check."""

    def __init__(self, inner, kind):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        if self.kind == "round":  # quantisation: zero gradient everywhere (digits are multiples of 1/16)
            return self.inner(torch.round(x * 16) / 16)
        out = self.inner(x)
        if self.kind == "softmax":
            return out.softmax(1)
        return out + 0.5 * torch.randn_like(out)  # "noise": a randomised forward pass


# --- per-example worst case -------------------------------------------------------------------


def test_worst_case_is_per_example_not_the_minimum():
    clean = torch.tensor([True, True, True, True])
    robust_acc, per_attack = worst_case(clean, {"a": torch.tensor([False, True, True, True]),
                                                "b": torch.tensor([True, True, False, True])})
    assert per_attack == {"a": 0.75, "b": 0.75}
    assert robust_acc == 0.5 < min(per_attack.values())


def test_worst_case_counts_clean_errors_as_not_robust():
    robust_acc, per_attack = worst_case(torch.tensor([False, True]), {"a": torch.tensor([True, True])})
    assert robust_acc == 0.5 and per_attack["a"] == 0.5


class Threshold(nn.Module):
    """Class 0 iff pixel 0 > 0.5; pixel 1 is a marker that lets each toy attack pick its victims."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        s = x[:, 0, 0, 0] - 0.5
        return torch.stack([s * self.w, torch.zeros_like(s)], 1)


def _toy():
    x = torch.zeros(4, 1, 1, 2)
    x[:, 0, 0, 0] = 0.6
    x[:, 0, 0, 1] = torch.tensor([0.1, 0.3, 0.7, 0.9])
    return x, torch.zeros(4, dtype=torch.long)


def _push(low, high, by):
    def attack(model, x, y, *, eps, norm, generator):
        hit = ((x[:, 0, 0, 1] > low) & (x[:, 0, 0, 1] < high)).float()
        x = x.clone()
        x[:, 0, 0, 0] -= by * hit
        return x
    return attack


def test_evaluate_model_takes_worst_case_over_attacks_that_fool_different_examples():
    x, y = _toy()
    r = evaluate_model(Threshold(), x, y, eps=0.2, attacks={"a": _push(0, 0.2, 0.2), "b": _push(0.8, 1, 0.2)}, checks=False)
    assert r["clean_acc"] == 1.0
    assert r["per_attack"] == {"a": 0.75, "b": 0.75}
    assert r["robust_acc"] == 0.5


def test_transfer_attacks_are_reported_apart_from_the_verdict():
    x, y = _toy()
    r = evaluate_model(Threshold(), x, y, eps=0.2, attacks={"a": _push(0, 0.2, 0.2)},
                       transfer={"gen": _push(0.8, 1, 0.2)}, checks=False)
    assert r["robust_acc"] == 0.75 and r["transfer"] == {"gen": 0.75} and "gen" not in r["per_attack"]


def test_examples_outside_the_ball_count_as_not_fooled():
    x, y = _toy()
    with pytest.warns(UserWarning, match="outside"):
        r = evaluate_model(Threshold(), x, y, eps=0.2, attacks={"big": _push(0, 1, 0.5)}, checks=False)
    assert r["per_attack"]["big"] == 1.0 and r["robust_acc"] == 1.0


def test_within_threat_model():
    x = torch.full((3, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[1, 0, 0, 0] += 0.3 + 1e-3  # just outside eps = 0.3
    adv[2] = 0.5 + 0.1  # L-inf 0.1, L2 0.2
    assert within_threat_model(x, adv, 0.3, "linf").tolist() == [True, False, True]
    assert within_threat_model(x, adv, 0.15, "l2").tolist() == [True, False, False]
    assert not within_threat_model(x, torch.full_like(x, 1.01), 0.6, "linf").any()  # outside [0, 1]


# --- the evaluation on a real model -------------------------------------------------------------


def test_robust_below_each_attack_below_clean_and_no_trace_left(cnn, digits):
    _, _, x, y = digits
    cnn.train()
    r = evaluate_model(cnn, x, y, eps=0.1, attacks="fgsm,pgd", pgd_steps=10, pgd_restarts=2, checks=False)
    assert cnn.training and all(p.grad is None and p.requires_grad for p in cnn.parameters())
    cnn.eval()
    assert r["robust_acc"] <= min(r["per_attack"].values()) <= max(r["per_attack"].values()) <= r["clean_acc"]
    assert r["per_attack"]["pgd"] < r["clean_acc"]  # eps 0.1 hurts a standard model
    assert r["n"] == 100 and r["eps"] == 0.1 and r["norm"] == "linf"


def test_same_seed_same_numbers(cnn, digits):
    _, _, x, y = digits
    run = lambda: evaluate_model(cnn, x, y, eps=0.05, attacks=["pgd"], pgd_steps=5, pgd_restarts=2, checks=False)
    a, b = run(), run()
    assert a["per_attack"] == b["per_attack"] and a["robust_acc"] == b["robust_acc"]


@pytest.mark.parametrize("options, message", [({"eps": 1.5}, "eps must be in"), ({"eps": -0.1}, "eps must be in"),
                                              ({"attacks": "pgd,cw"}, "unknown attack 'cw'"),
                                              ({"norm": "l1"}, "unknown norm"), ({"aa_version": "plus"}, "AutoAttack version")])
def test_bad_options_are_user_errors(cnn, digits, options, message):
    _, _, x, y = digits
    with pytest.raises(UserError, match=message):
        evaluate_model(cnn, x[:4], y[:4], **{"eps": 0.1, **options})


def test_without_art_autoattack_is_skipped_by_default_and_refused_when_asked(cnn, digits, monkeypatch):
    _, _, x, y = digits
    monkeypatch.setattr(robust, "art_available", lambda: False)
    with pytest.warns(UserWarning, match="AutoAttack skipped"):
        r = evaluate_model(cnn, x[:8], y[:8], eps=0.1, pgd_steps=2, pgd_restarts=1, checks=False)
    assert set(r["per_attack"]) == {"fgsm", "pgd"}
    with pytest.raises(UserError, match=r"pip install -e '\.\[eval\]'"):
        evaluate_model(cnn, x[:8], y[:8], eps=0.1, attacks="autoattack")


# --- sanity checks: each fires on a model built to fail it, and passes on a normal CNN ---------


def test_logits_check(cnn, digits):
    x = digits[2][:50]
    assert checks.logits_not_probabilities(cnn, x)["passed"]
    assert not checks.logits_not_probabilities(Wrapped(cnn, "softmax"), x)["passed"]


def test_determinism_check(cnn, digits):
    x = digits[2][:50]
    assert checks.deterministic_forward(cnn, x)["passed"]
    assert not checks.deterministic_forward(Wrapped(cnn, "noise"), x)["passed"]


def test_gradient_checks_catch_quantised_input(cnn, digits):
    _, _, x, y = digits
    rounded = Wrapped(cnn, "round")
    with torch.no_grad():
        assert torch.equal(rounded(x).argmax(1), cnn(x).argmax(1))  # same predictions, masked gradient
    assert checks.nonzero_gradients(cnn, x, y)["passed"]
    assert not checks.nonzero_gradients(rounded, x, y)["passed"]
    assert checks.unbounded_attack_succeeds(cnn, x, y)["passed"]
    assert not checks.unbounded_attack_succeeds(rounded, x, y)["passed"]


def test_pgd_vs_fgsm_rule():
    assert checks.pgd_not_weaker_than_fgsm({"fgsm": 0.40, "pgd": 0.30}, n=1000)["passed"]
    assert not checks.pgd_not_weaker_than_fgsm({"fgsm": 0.30, "pgd": 0.45}, n=1000)["passed"]
    assert "skipped" in checks.pgd_not_weaker_than_fgsm({"pgd": 0.3}, n=1000)["detail"]


def test_eps_sweep(cnn, digits):
    _, _, x, y = digits
    assert checks.sweep_is_non_increasing([0, 0.1, 0.2], [0.9, 0.5, 0.2], tol=0.02)["passed"]
    assert not checks.sweep_is_non_increasing([0, 0.1, 0.2], [0.9, 0.5, 0.7], tol=0.02)["passed"]
    assert checks.accuracy_falls_with_eps(cnn, x, y, eps=0.2, norm="linf", steps=10)["passed"]


def test_all_checks_pass_on_a_normal_cnn_and_a_failure_warns(cnn, digits, recwarn):
    _, _, x, y = digits
    r = evaluate_model(cnn, x, y, eps=0.1, attacks="fgsm,pgd", pgd_steps=10, pgd_restarts=1)
    assert set(r["checks"]) == set(checks.CHECKS)
    assert all(c["passed"] for c in r["checks"].values()), r["checks"]
    assert not [w for w in recwarn if "check" in str(w.message)]
    with pytest.warns(UserWarning, match="check logits_not_probabilities failed"):
        evaluate_model(Wrapped(cnn, "softmax"), x[:20], y[:20], eps=0.1, attacks="fgsm,pgd", pgd_steps=2, pgd_restarts=1)


# --- AutoAttack through ART ---------------------------------------------------------------------


def test_keep_in_threat_model_replaces_escaped_examples():
    x = torch.full((2, 1, 2, 2), 0.5)
    adv = x + torch.tensor([0.05, 0.3]).view(2, 1, 1, 1)
    with pytest.warns(UserWarning, match="1 adversarial example"):
        out = keep_in_threat_model(x, adv, 0.1, "linf")
    assert torch.equal(out[0], adv[0]) and torch.equal(out[1], x[1])


@needs_art
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_art_autoattack_fast_stays_in_the_ball(cnn, digits, norm, eps):
    _, _, x, y = digits
    x, y = x[:12], y[:12]
    adv = autoattack(cnn, x, y, eps=eps, norm=norm, version="fast", batch_size=12)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert within_threat_model(x, adv, eps, norm).all()
    assert all(p.grad is None for p in cnn.parameters())
    with torch.no_grad():
        clean, attacked = (cnn(x).argmax(1) == y).sum(), (cnn(adv).argmax(1) == y).sum()
    assert attacked < clean  # it found something: eps 0.1 breaks a standard model


@needs_art
def test_aa_versions_use_the_documented_attack_lists(cnn, digits):
    import numpy as np
    from metaadv.evaluation.autoattack import _attack_list, _classifier

    clf = _classifier(cnn, digits[2][:2], 10)
    standard = _attack_list(clf, 0.1, np.inf, "standard", 32)
    fast = _attack_list(clf, 0.1, np.inf, "fast", 32)
    names = lambda attacks: [(type(a).__name__, getattr(a, "loss_type", None)) for a in attacks]
    apgd = [("AutoProjectedGradientDescent", "cross_entropy"), ("AutoProjectedGradientDescent", "difference_logits_ratio")]
    assert names(standard) == apgd + [("DeepFool", None), ("SquareAttack", None)]
    assert names(fast) == apgd
    assert all(a.eps_step == pytest.approx(0.2) for a in fast)  # APGD's first step is 2 eps


@needs_art
def test_deepfool_escapes_the_ball_and_is_caught(cnn, digits):
    """DeepFool is not eps-bounded: what it returns beyond eps must not count as fooled."""
    from art.attacks.evasion import DeepFool
    from metaadv.evaluation.autoattack import _classifier

    x = digits[2][:8]
    with torch.no_grad():
        x = x[cnn(x).argmax(1) == digits[3][:8]]
    clf = _classifier(cnn, x, 10)
    adv = torch.from_numpy(DeepFool(clf, max_iter=10, epsilon=0.02, nb_grads=10, verbose=False).generate(x.numpy()))
    outside = ~within_threat_model(x, adv, 0.02, "linf")
    assert outside.any()  # eps 0.02 is well below what DeepFool needs on these digits
    with pytest.warns(UserWarning, match="outside"):
        kept = keep_in_threat_model(x, adv, 0.02, "linf")
    assert torch.equal(kept[outside], x[outside]) and within_threat_model(x, kept, 0.02, "linf").all()


@needs_art
@pytest.mark.slow
def test_art_autoattack_standard_in_evaluate_model(cnn, digits):
    # eps 0.3 breaks every example in APGD-CE, so ART stops before Square's 25,000 queries.
    _, _, x, y = digits
    r = evaluate_model(cnn, x[:8], y[:8], eps=0.3, attacks="pgd,autoattack", aa_version="standard",
                       pgd_steps=10, pgd_restarts=1, checks=False)
    assert r["robust_acc"] <= r["per_attack"]["autoattack"] <= r["clean_acc"]
    assert r["per_attack"]["autoattack"] == 0.0
    assert r["attacks"]["autoattack"]["version"] == "standard"


# --- the picture --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_save_examples_writes_a_png(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, channels, 8, 8, generator=g)
    adv = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y, pred = torch.arange(5), torch.tensor([0, 2, 2, 3, 1])
    path = save_examples(tmp_path / "sub" / "grid.png", x, adv, y, y, pred, max_examples=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left behind
