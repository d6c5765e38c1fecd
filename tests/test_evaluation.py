"""Robust evaluation: per-example worst case, sanity checks that fire, AutoAttack stays in the ball."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from metaadv.attacks import frozen_eval
from metaadv.data import load_splits
from metaadv.errors import UserError
from metaadv.evaluation import autoattack, checks, evaluate_model, robust, save_examples, within_threat_model, worst_case
from metaadv.evaluation.autoattack import art_available, pyautoattack_available
from metaadv.evaluation.checks import keep_in_threat_model
from metaadv.models import DigitsNet

from .attack_suite import AttackCase, AttackSuite, cross_entropy_objective

needs_art = pytest.mark.skipif(not art_available(), reason="adversarial-robustness-toolbox not installed")
needs_aa = pytest.mark.skipif(not pyautoattack_available(), reason="pyautoattack not installed")


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


def test_evaluation_judges_in_fp32_even_inside_a_callers_autocast(cnn, digits):
    """A low-precision judge could miss adversarial examples: evaluation switches autocast off."""
    _, _, x, y = digits
    seen = []
    cnn.register_forward_pre_hook(lambda m, i: seen.append(torch.is_autocast_enabled("cpu")))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = evaluate_model(cnn, x, y, eps=0.1, attacks="fgsm,pgd", pgd_steps=2, pgd_restarts=1, checks=False)
    assert seen and not any(seen), "a forward pass of the evaluation ran under autocast"
    assert r["precision"] == "fp32"


def test_same_seed_same_numbers(cnn, digits):
    _, _, x, y = digits
    run = lambda: evaluate_model(cnn, x, y, eps=0.05, attacks=["pgd"], pgd_steps=5, pgd_restarts=2, checks=False)
    a, b = run(), run()
    assert a["per_attack"] == b["per_attack"] and a["robust_acc"] == b["robust_acc"]


@pytest.mark.parametrize("options, message", [({"eps": 1.5}, "eps must be in"), ({"eps": -0.1}, "eps must be in"),
                                              ({"attacks": "pgd,cw"}, "unknown attack 'cw'"),
                                              ({"norm": "l1"}, "unknown norm"), ({"aa_version": "bogus"}, "AutoAttack version"),
                                              ({"aa_version": "plus", "aa_impl": "art"}, "version 'plus' for --aa-impl art"),
                                              ({"aa_impl": "cleverhans"}, "unknown AutoAttack implementation")])
def test_bad_options_are_user_errors(cnn, digits, options, message):
    _, _, x, y = digits
    with pytest.raises(UserError, match=message):
        evaluate_model(cnn, x[:4], y[:4], **{"eps": 0.1, **options})


def test_without_autoattack_the_default_verdict_says_missing_and_asking_for_it_is_refused(cnn, digits, monkeypatch):
    _, _, x, y = digits
    monkeypatch.setattr(robust, "aa_available", lambda impl="pyautoattack": False)
    with pytest.warns(UserWarning, match="AutoAttack missing"):
        r = evaluate_model(cnn, x[:8], y[:8], eps=0.1, pgd_steps=2, pgd_restarts=1, checks=False)
    assert set(r["per_attack"]) == {"fgsm", "pgd"}
    assert r["autoattack"] == "missing" and r["trusted"] is False
    assert any("autoattack missing" in reason for reason in r["untrusted_reasons"])
    with pytest.raises(UserError, match=r"pip install -e '\.\[eval\]'"):
        evaluate_model(cnn, x[:8], y[:8], eps=0.1, attacks="autoattack")
    # Left out by choice: not missing, and not held against the verdict.
    r = evaluate_model(cnn, x[:8], y[:8], eps=0.1, attacks="pgd", pgd_steps=2, pgd_restarts=1, checks=False)
    assert r["autoattack"] == "not requested" and r["trusted"] is True


# --- sanity checks: each fires on a model built to fail it, and passes on a normal CNN ---------


def test_logits_check(cnn, digits):
    x = digits[2][:50]
    assert checks.logits_not_probabilities(cnn, x)["status"] == "passed"
    assert checks.logits_not_probabilities(Wrapped(cnn, "softmax"), x)["status"] == "failed"


def test_determinism_check(cnn, digits):
    x = digits[2][:50]
    assert checks.deterministic_forward(cnn, x)["status"] == "passed"
    assert checks.deterministic_forward(Wrapped(cnn, "noise"), x)["status"] == "failed"


def test_gradient_checks_catch_quantised_input(cnn, digits):
    _, _, x, y = digits
    rounded = Wrapped(cnn, "round")
    with torch.no_grad():
        assert torch.equal(rounded(x).argmax(1), cnn(x).argmax(1))  # same predictions, masked gradient
    assert checks.nonzero_gradients(cnn, x, y)["status"] == "passed"
    assert checks.nonzero_gradients(rounded, x, y)["status"] == "failed"
    assert checks.unbounded_attack_succeeds(cnn, x, y)["status"] == "passed"
    assert checks.unbounded_attack_succeeds(rounded, x, y)["status"] == "failed"


def test_pgd_vs_fgsm_rule():
    assert checks.pgd_not_weaker_than_fgsm({"fgsm": 0.40, "pgd": 0.30}, n=1000)["status"] == "passed"
    assert checks.pgd_not_weaker_than_fgsm({"fgsm": 0.30, "pgd": 0.45}, n=1000)["status"] == "failed"
    assert checks.pgd_not_weaker_than_fgsm({"pgd": 0.3}, n=1000)["status"] == "skipped"


def test_eps_sweep(cnn, digits):
    _, _, x, y = digits
    assert checks.sweep_is_non_increasing([0, 0.1, 0.2], [0.9, 0.5, 0.2], tol=0.02)["status"] == "passed"
    assert checks.sweep_is_non_increasing([0, 0.1, 0.2], [0.9, 0.5, 0.7], tol=0.02)["status"] == "failed"
    assert checks.accuracy_falls_with_eps(cnn, x, y, eps=0.2, norm="linf", steps=10)["status"] == "passed"


def test_all_checks_pass_on_a_normal_cnn_and_a_failure_warns(cnn, digits, recwarn):
    _, _, x, y = digits
    r = evaluate_model(cnn, x, y, eps=0.1, attacks="fgsm,pgd", pgd_steps=10, pgd_restarts=1)
    assert set(r["checks"]) == set(checks.CHECKS)
    assert all(c["status"] == "passed" for c in r["checks"].values()), r["checks"]
    assert r["trusted"] is True and r["untrusted_reasons"] == []
    assert not [w for w in recwarn if "check" in str(w.message)]
    with pytest.warns(UserWarning, match="check logits_not_probabilities failed"):
        bad = evaluate_model(Wrapped(cnn, "softmax"), x[:20], y[:20], eps=0.1, attacks="fgsm,pgd", pgd_steps=2,
                             pgd_restarts=1)
    assert bad["trusted"] is False and bad["untrusted_reasons"][0].startswith("check logits_not_probabilities failed")


# --- AutoAttack through ART (the second opinion) ------------------------------------------------


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
    adv = autoattack(cnn, x, y, eps=eps, norm=norm, version="fast", batch_size=12, impl="art")
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert within_threat_model(x, adv, eps, norm).all()
    assert all(p.grad is None for p in cnn.parameters())
    with torch.no_grad():
        clean, attacked = (cnn(x).argmax(1) == y).sum(), (cnn(adv).argmax(1) == y).sum()
    assert attacked < clean  # it found something: eps 0.1 breaks a standard model


@needs_art
def test_aa_versions_use_the_documented_attack_lists(cnn, digits):
    import numpy as np
    from metaadv.evaluation.autoattack_art import _attack_list, _classifier

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
    from metaadv.evaluation.autoattack_art import _classifier

    x = digits[2][:8]
    with torch.no_grad():
        x = x[cnn(x).argmax(1) == digits[3][:8]]
    clf = _classifier(cnn, x, 10)
    with frozen_eval(cnn):  # ART's backward would leave .grad on the module-scoped model the later tests share
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
    r = evaluate_model(cnn, x[:8], y[:8], eps=0.3, attacks="pgd,autoattack", aa_version="standard", aa_impl="art",
                       pgd_steps=10, pgd_restarts=1, checks=False)
    assert r["robust_acc"] <= r["per_attack"]["autoattack"] <= r["clean_acc"]
    assert r["per_attack"]["autoattack"] == 0.0
    assert r["attacks"]["autoattack"]["version"] == "standard"
    assert r["attacks"]["autoattack"]["implementation"].startswith("adversarial-robustness-toolbox")


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


# --- PGD in evaluation: broken if any iterate fools the model -----------------------------------


class _PushUp(torch.autograd.Function):
    """Forward: the identity. Backward: the gradient always says "raise pixel 0"."""

    @staticmethod
    def forward(ctx, s):
        return s.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.ones_like(grad)  # d loss / d pixel 0 = +1, whatever the model says


class Window(nn.Module):
    """Class 0 (correct) unless pixel 0 lies in (0.55, 0.65); its gradient always points up.

    PGD from 0.5 with steps of 0.1 passes through the window and out again: an earlier iterate
    fools the model, the last one does not.
    """

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        s = _PushUp.apply(x[:, 0, 0, 0])
        inside = ((s > 0.55) & (s < 0.65)).float()
        return torch.stack([self.w * (1 - 2 * inside) + (s - s.detach()), torch.zeros_like(s)], 1)


def test_pgd_any_iterate_keeps_the_iterate_that_fooled_the_model():
    from metaadv.attacks import pgd

    model, x, y = Window(), torch.full((3, 1, 1, 1), 0.5), torch.zeros(3, dtype=torch.long)
    options = dict(eps=0.3, step_size=0.1, steps=3, random_init=False)
    last = pgd(model, x, y, **options)
    assert torch.allclose(last, torch.full_like(x, 0.8))  # the end point: correct again
    assert (model(last).argmax(1) == y).all()
    anyit = pgd(model, x, y, any_iterate=True, **options)
    assert torch.allclose(anyit, torch.full_like(x, 0.6))  # the step that fooled it
    assert (model(anyit).argmax(1) != y).all()
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_pgd_any_iterate_keeps_the_highest_loss_end_point_when_nothing_fools(cnn, digits):
    from metaadv.attacks import pgd

    _, _, x, y = digits
    g = torch.Generator().manual_seed(3)
    adv = pgd(cnn, x[:20], y[:20], eps=0.01, step_size=0.005, steps=3, restarts=2, generator=g, any_iterate=True)
    assert within_threat_model(x[:20], adv, 0.01, "linf").all()
    with torch.no_grad():
        fooled = cnn(adv).argmax(1) != y[:20]
        loss = nn.functional.cross_entropy(cnn(adv), y[:20], reduction="none")
        clean_loss = nn.functional.cross_entropy(cnn(x[:20]), y[:20], reduction="none")
    assert (loss[~fooled] > clean_loss[~fooled]).all()  # not fooled: still an ascent, not the clean input


def test_evaluation_pgd_counts_an_earlier_fooling_iterate():
    # Random starts in [0.2, 0.8], steps of 0.1 up: about 2/3 of the paths cross the window, but
    # only about 1/6 end in it.
    from metaadv.attacks import pgd

    x, y = torch.full((60, 1, 1, 1), 0.5), torch.zeros(60, dtype=torch.long)
    r = evaluate_model(Window(), x, y, eps=0.3, attacks="pgd", pgd_steps=3, pgd_restarts=1, pgd_step_size=0.1,
                       checks=False)
    last = pgd(Window(), x, y, eps=0.3, step_size=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    last_acc = (Window()(last).argmax(1) == y).float().mean().item()
    assert last_acc > 0.7 and r["per_attack"]["pgd"] < 0.5
    assert r["attacks"]["pgd"]["broken_if"] == "any iterate"


def _pgd_any_iterate(m, x, y, *, generator):
    from metaadv.attacks import pgd

    return pgd(m, x, y, eps=0.1, step_size=0.025, steps=10, restarts=2, generator=generator, any_iterate=True)


class TestEvaluationPGDSuite(AttackSuite):
    """The evaluation's PGD (any_iterate) obeys everything every attack must."""

    @pytest.fixture(params=[AttackCase("pgd-any-iterate", _pgd_any_iterate, eps=0.1, norm="linf",
                                       objective=cross_entropy_objective)], ids=lambda c: c.name)
    def attack_case(self, request):
        return request.param


# --- the verdict: failed checks cannot pass ------------------------------------------------------


class _NoiseGrad(torch.autograd.Function):
    """Forward: the identity. Backward: seeded random noise instead of the true input gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        g = torch.Generator().manual_seed(int(grad.abs().sum().item() * 1e6) % 2**31)
        return torch.randn(grad.shape, generator=g, dtype=grad.dtype)


class NoiseGradient(nn.Module):
    """``inner``'s predictions, with an input gradient that is pure noise (masked gradients)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_NoiseGrad.apply(x))


def test_masked_gradient_model_is_untrusted(cnn, digits):
    _, _, x, y = digits
    with pytest.warns(UserWarning, match="check .* failed"):
        r = evaluate_model(NoiseGradient(cnn), x, y, eps=0.1, attacks="fgsm,pgd", pgd_steps=10, pgd_restarts=1)
    failed = [name for name, c in r["checks"].items() if c["status"] == "failed"]
    assert "unbounded_attack_succeeds" in failed
    assert r["trusted"] is False and len(r["untrusted_reasons"]) == len(failed) >= 1
    clean = evaluate_model(cnn, x, y, eps=0.1, attacks="fgsm,pgd", pgd_steps=10, pgd_restarts=1)
    assert r["robust_acc"] > clean["robust_acc"]  # the masked model looks more robust than it is


def test_a_check_that_cannot_run_is_skipped_not_passed(cnn, digits):
    _, _, x, y = digits
    r = evaluate_model(cnn, x[:40], y[:40], eps=0.1, attacks="pgd", pgd_steps=5, pgd_restarts=1)
    assert r["checks"]["pgd_not_weaker_than_fgsm"]["status"] == "skipped"
    assert sum(c["status"] == "passed" for c in r["checks"].values()) == len(checks.CHECKS) - 1
    assert r["trusted"] is True
    off = evaluate_model(cnn, x[:8], y[:8], eps=0.1, attacks="pgd", pgd_steps=2, pgd_restarts=1, checks=False)
    assert {c["status"] for c in off["checks"].values()} == {"skipped"} and off["trusted"] is True


def test_verdict_rule():
    from metaadv.evaluation import verdict

    ok, skip, bad = ({"status": s, "detail": s} for s in ("passed", "skipped", "failed"))
    assert verdict({"a": ok, "b": skip}, "ran") == (True, [])
    assert verdict({"a": ok}, "not requested") == (True, [])
    assert verdict({"a": ok, "b": bad}, "ran") == (False, ["check b failed: failed"])
    trusted, reasons = verdict({"a": ok}, "missing")
    assert not trusted and reasons[0].startswith("autoattack missing")


def test_progress_bars_per_attack_on_stderr(cnn, digits, capsys):
    _, _, x, y = digits
    evaluate_model(cnn, x[:20], y[:20], eps=0.1, attacks="fgsm,pgd", pgd_steps=2, pgd_restarts=1, checks=False,
                   batch_size=8, progress=True)
    err = capsys.readouterr().err
    assert "fgsm" in err and "pgd" in err and "100%" in err and "ex/s" in err
    evaluate_model(cnn, x[:20], y[:20], eps=0.1, attacks="pgd", pgd_steps=2, pgd_restarts=1, checks=False,
                   progress=False)
    assert capsys.readouterr().err == ""


def test_no_progress_needs_no_tqdm(cnn, digits, monkeypatch):
    # The GPU check evaluates with --no-progress on a machine that may lack tqdm.
    _, _, x, y = digits
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    result = evaluate_model(cnn, x[:8], y[:8], eps=0.1, attacks="fgsm,pgd", pgd_steps=2, pgd_restarts=1,
                            checks=False, progress=False)
    assert set(result["per_attack"]) == {"fgsm", "pgd"}


# --- the reference AutoAttack (pyautoattack) -----------------------------------------------------


@needs_aa
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_reference_autoattack_fast_stays_in_the_ball_and_leaves_no_trace(cnn, digits, norm, eps):
    _, _, x, y = digits
    x, y = x[:8], y[:8]
    state = torch.get_rng_state()
    adv = autoattack(cnn, x, y, eps=eps, norm=norm, version="fast", batch_size=8)
    assert torch.equal(torch.get_rng_state(), state)  # the reference reseeds torch: restored
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert within_threat_model(x, adv, eps, norm).all()
    assert all(p.grad is None and p.requires_grad for p in cnn.parameters())
    with torch.no_grad():
        clean, attacked = (cnn(x).argmax(1) == y).sum(), (cnn(adv).argmax(1) == y).sum()
    assert attacked < clean
    if norm == "linf":
        assert torch.equal(adv, autoattack(cnn, x, y, eps=eps, norm=norm, version="fast", batch_size=8))  # seeded


@needs_aa
def test_reference_versions_run_the_documented_components(cnn, digits):
    from metaadv.evaluation.autoattack import ReferenceAutoAttack

    x = digits[2][:2]
    make = lambda version, classes=10: ReferenceAutoAttack(cnn, eps=0.1, norm="linf", version=version, seed=0,
                                                           num_classes=classes, device="cpu")
    standard, fast = make("standard"), make("fast")
    assert standard.components == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert make("plus").components == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert make("rand").components == ["apgd-ce", "apgd-dlr"] and make("rand").aa.apgd.eot_iter == 20
    assert fast.components == ["apgd-ce", "apgd-t"]
    for a in (standard.aa, fast.aa):  # fast = the standard version's first two attacks, same settings
        assert (a.apgd.n_restarts, a.apgd.n_iter, a.apgd_targeted.n_restarts, a.apgd_targeted.n_target_classes) == (1, 100, 1, 9)
    three = make("standard", classes=3)
    assert three.components == ["apgd-ce", "fab-t", "square"] and "needs >= 4 classes" in three.skipped["apgd-t"]
    assert three.aa.fab.n_target_classes == 2
    assert make("plus", classes=2).components == ["apgd-ce", "fab", "square", "fab-t"]


class Binary(nn.Module):
    """Two classes from a DigitsNet: too few for APGD-T's targeted DLR loss."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return torch.stack([out[:, :5].logsumexp(1), out[:, 5:].logsumexp(1)], 1)


@needs_aa
def test_reference_autoattack_in_evaluate_model_reports_components_and_skips(cnn, digits):
    _, _, x, y = digits
    r = evaluate_model(cnn, x[:16], y[:16], eps=0.1, attacks="pgd,autoattack", aa_version="fast", pgd_steps=5,
                       pgd_restarts=1, checks=False, batch_size=8)
    info = r["attacks"]["autoattack"]
    assert info["implementation"].startswith("pyautoattack") and info["components"] == ["apgd-ce", "apgd-t"]
    after = list(info["accuracy_after"].values())
    assert after == sorted(after, reverse=True) and after[-1] == r["per_attack"]["autoattack"]
    assert r["autoattack"] == "ran" and r["robust_acc"] <= r["per_attack"]["autoattack"] < r["clean_acc"]
    yb = (y[:16] >= 5).long()
    rb = evaluate_model(Binary(cnn), x[:16], yb, eps=0.1, attacks="autoattack", aa_version="fast", checks=False)
    assert rb["attacks"]["autoattack"]["components"] == ["apgd-ce"]
    assert "apgd-t" in rb["attacks"]["autoattack"]["skipped"]


def test_progress_bar_size_on_a_terminal_that_reports_zero_columns(monkeypatch):
    import os

    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((0, 0)))
    assert robust._size() == {"ncols": 80, "nrows": 24}  # else tqdm draws nothing at all
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((120, 40)))
    assert robust._size() == {}


@needs_aa
def test_reference_warnings_are_collected_once_into_the_report(cnn, digits):
    from metaadv.evaluation.autoattack import ReferenceAutoAttack

    _, _, x, y = digits
    noisy = Wrapped(cnn, "noise")  # a randomised forward: the reference's own check warns
    ref = ReferenceAutoAttack(noisy, eps=0.1, norm="linf", version="fast", seed=0, num_classes=10, device="cpu")
    ref.aa.apgd.n_iter = 5  # the warning comes before the attack; keep the attack short
    with pytest.warns(UserWarning, match="pyautoattack: .*randomized defense") as caught:
        ref.run("apgd-ce", x[:4], y[:4])
        ref.run("apgd-ce", x[4:8], y[4:8])
    assert sum("randomized" in str(w.message) for w in caught) == 1
    assert len([n for n in ref.notes if "randomized" in n]) == 1


def test_square_finding_more_than_the_gradient_attacks_is_noted():
    assert robust.square_note({"apgd-ce": 0.30, "apgd-t": 0.19, "fab-t": 0.19, "square": 0.1867}).startswith("Square lowered")
    assert robust.square_note({"apgd-ce": 0.30, "apgd-t": 0.19, "fab-t": 0.19, "square": 0.19}) is None
    assert robust.square_note({"apgd-ce": 0.30, "apgd-t": 0.19}) is None


def test_l2_eps_is_bounded_by_the_images_norm_not_by_one(cnn, digits):
    """MNIST's usual L2 radii (1.5-2.0) are above 1; the bound is sqrt(C*H*W) (8 for 8x8 digits)."""
    _, _, x, y = digits
    r = evaluate_model(cnn, x[:20], y[:20], eps=2.0, norm="l2", attacks="pgd", pgd_steps=3, pgd_restarts=1, checks=False)
    assert r["eps"] == 2.0 and r["robust_acc"] <= r["clean_acc"]
    with pytest.raises(UserError, match=r"eps must be in \[0, 8\]"):
        evaluate_model(cnn, x[:20], y[:20], eps=8.5, norm="l2", attacks="pgd", checks=False)
    with pytest.raises(UserError, match=r"eps must be in \[0, 1\]"):
        evaluate_model(cnn, x[:20], y[:20], eps=1.5, norm="linf", attacks="pgd", checks=False)


def test_square_finds_what_masked_gradients_hide_and_enters_the_worst_case(cnn, digits):
    pytest.importorskip("pyautoattack")
    _, _, x, y = digits
    x, y = x[:30], y[:30]
    masked = NoiseGradient(cnn)
    # Measured on 60 digits at eps 0.2: PGD-10 on the noise gradients leaves 97% (the unmasked
    # model: 2%), Square with 300 queries 23%.
    r = evaluate_model(masked, x, y, eps=0.2, attacks="pgd,square", pgd_steps=10, pgd_restarts=1,
                       square_queries=300, checks=False)
    assert r["attacks"]["square"]["queries"] == 300 and r["attacks"]["square"]["gradient_free"]
    # Gradient-free, Square breaks the masked model far beyond what PGD on noise gradients finds ...
    assert r["per_attack"]["square"] < r["per_attack"]["pgd"] - 0.1
    # ... and the verdict is the per-example worst case of both, not either attack's own accuracy.
    assert r["robust_acc"] <= min(r["per_attack"].values())
    without = evaluate_model(masked, x, y, eps=0.2, attacks="pgd", pgd_steps=10, pgd_restarts=1, checks=False)
    assert r["robust_acc"] < without["robust_acc"]


def test_square_is_named_explicitly_and_its_budget_is_checked(cnn, digits):
    from metaadv.evaluation.robust import DEFAULT_ATTACKS, resolve_attacks

    assert "square" not in DEFAULT_ATTACKS and "square" in resolve_attacks("pgd,square")[0]
    _, _, x, y = digits
    with pytest.raises(UserError, match="square-queries must be >= 1"):
        evaluate_model(cnn, x[:4], y[:4], eps=0.1, attacks="square", square_queries=0)


def test_a_surrogate_transfer_attack_breaks_masked_gradients_and_enters_the_worst_case(cnn, digits, tmp_path):
    """A black-box transfer (PGD on an independent copy, shown to the masked model) finds what PGD on
    the masked model's noise gradients cannot, and the verdict takes it into the worst case."""
    from metaadv.checkpoint import save_checkpoint
    from metaadv.evaluation.transfer import surrogate_attacks

    _, _, x, y = digits
    x, y = x[:40], y[:40]
    save_checkpoint({"kind": "train", "arch": "digits-net", "model_kwargs": {"mean": (0.3,), "std": (0.4,)},
                     "trainer": {"model": cnn.state_dict()}}, tmp_path / "surrogate.pt")
    attacks = {"pgd": "pgd", **surrogate_attacks(str(tmp_path / "surrogate.pt"))}
    (name,) = [k for k in attacks if k.startswith("transfer-pgd:")]
    r = evaluate_model(NoiseGradient(cnn), x, y, eps=0.2, attacks=attacks, pgd_steps=10, pgd_restarts=1, checks=False)
    assert r["per_attack"][name] < r["per_attack"]["pgd"] - 0.1
    assert r["robust_acc"] <= r["per_attack"][name]
    with pytest.raises(UserError, match="no checkpoint at"):
        surrogate_attacks(str(tmp_path / "missing.pt"))
