"""The REINFORCE policy: its gradient by hand, a bandit it must solve, grids, files and bad input."""

import pytest
import torch
from torch import nn

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.models.policy import PolicyNet, log_prob_and_entropy, reinforce_loss, sample_actions
from metaadv.training.hparams import HParams
from metaadv.training.policy import PolicyController, apply_choices, load_policy_file, save_policy_file

NO_GRIDS = {f"policy_{d}": [] for d in ("eps", "step_ratio", "steps", "lr_mult", "weight_decay", "adv_mix")}


def reward_row(r: int, before: float, after: float, *, fgsm: float | None = None, grad_evals: int = 0,
               reward_grad_evals: int = 0) -> dict:
    """Round ``r``'s row as the round loop gives it to the policy: its reward check and costs."""
    return {"round": r, "step": r, "val/robust_acc": 0.0, "val/clean_acc": 0.0, "train/loss": 1.0, "train/adv_acc": 0.5,
            "policy/robust_acc_before": before, "policy/robust_acc": after, "policy/clean_acc": 0.9,
            "policy/fgsm_acc": after if fgsm is None else fgsm, "cost/grad_evals": grad_evals,
            "cost/reward_grad_evals": reward_grad_evals}


def policy_config(**changes):
    return TrainConfig.from_dict({"dataset": "digits", "controller": "policy", "batch_size": 10, "rounds": 100, **changes})


def test_reinforce_gradient_matches_a_hand_computation():
    torch.manual_seed(0)
    net = PolicyNet(3, [3, 2], hidden=4)
    for head in net.heads:  # away from the uniform start, so every term of the gradient is non-zero
        nn.init.normal_(head.weight)
        nn.init.normal_(head.bias)
    s, actions, adv, c = torch.tensor([[0.5, -1.0, 0.25]]), torch.tensor([[2, 0]]), 0.7, 0.05
    reinforce_loss(net(s), actions, adv, c).backward()
    with torch.no_grad():
        linear = net.body[0]
        h = torch.tanh(linear.weight @ s[0] + linear.bias)
        grad_h = torch.zeros(4)
        for k, head in enumerate(net.heads):
            p = torch.softmax(head.weight @ h + head.bias, 0)
            entropy = -(p * p.log()).sum()
            dlogp = torch.eye(len(p))[actions[0, k]] - p  # d log p_a / dz = onehot(a) - p
            dentropy = -p * (p.log() + entropy)  # dH / dz_j = -p_j (log p_j + H)
            dz = -(adv * dlogp + c * dentropy)  # the loss is minus the objective
            assert torch.allclose(head.weight.grad, torch.outer(dz, h), atol=1e-6)
            assert torch.allclose(head.bias.grad, dz, atol=1e-6)
            grad_h += head.weight.T @ dz
        dpre = grad_h * (1 - h**2)
        assert torch.allclose(linear.weight.grad, torch.outer(dpre, s[0]), atol=1e-6)
        assert torch.allclose(linear.bias.grad, dpre, atol=1e-6)


def test_log_prob_entropy_and_sampling_are_factorised():
    logits = [torch.log(torch.tensor([[0.2, 0.8]])), torch.log(torch.tensor([[0.5, 0.25, 0.25]]))]
    log_p, entropy = log_prob_and_entropy(logits, torch.tensor([[1, 2]]))
    assert log_p.item() == pytest.approx(torch.log(torch.tensor(0.8 * 0.25)).item())
    h = lambda *p: -sum(q * torch.log(torch.tensor(q)).item() for q in p)  # noqa: E731
    assert entropy.item() == pytest.approx(h(0.2, 0.8) + h(0.5, 0.25, 0.25), rel=1e-5)
    draws = [sample_actions(logits, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    counts = sample_actions([logits[0].expand(4000, 2)], torch.Generator().manual_seed(0)).float().mean()
    assert counts.item() == pytest.approx(0.8, abs=0.03)


BANDIT_UPDATES = 100  # the stated budget: by then the best arm must have most of the probability (it does by ~60)


def test_policy_finds_the_best_arm_of_a_seeded_bandit():
    """Four eps arms with mean rewards 0, 0.01, 0.03, 0.015 and noise 0.01 (accuracy units)."""
    config = policy_config(**{**NO_GRIDS, "policy_eps": [0.25, 0.5, 0.75, 1.0], "policy_cost_weight": 0, "rounds": BANDIT_UPDATES})
    controller = PolicyController(config)
    means, noise, robust = [0.0, 0.01, 0.03, 0.015], torch.Generator().manual_seed(0), 0.5
    picks = []
    for r in range(BANDIT_UPDATES):
        arm = [0.25, 0.5, 0.75, 1.0].index(round(controller.propose(r).eps / config.eps, 6))
        picks.append(arm)
        gain = means[arm] + 0.01 * torch.randn(1, generator=noise).item()
        controller.observe(reward_row(r + 1, robust, robust + gain))
        robust += gain
    with torch.no_grad():
        p = torch.softmax(controller.net(controller.state[None])[0], 1)[0]
    assert p.argmax().item() == 2 and p[2] > 0.8
    assert picks[-20:].count(2) > 12  # and it acts on it


def test_apply_choices_scales_eps_and_lr_and_sets_the_rest():
    hp = HParams(eps=0.1, lr=0.01)
    out = apply_choices(hp, {"eps": 0.5, "lr_mult": 3.0, "steps": 5.0, "step_ratio": 0.1, "adv_mix": 0.5}, eps_target=0.3)
    assert (out.eps, out.lr, out.steps, out.step_ratio, out.adv_mix) == (pytest.approx(0.15), pytest.approx(0.03), 5, 0.1, 0.5)
    assert isinstance(out.steps, int)


def test_policy_eps_is_not_blended_with_the_schedule_ramp():
    controller = PolicyController(policy_config(**{**NO_GRIDS, "policy_eps": [0.5, 1.0]}, eps_ramp_rounds=3))
    hp = controller.propose(0)  # round 0 of the schedule's ramp
    assert round(hp.eps / 0.3, 6) in (0.5, 1.0)
    assert hp.as_row().get("hp/eps_start", hp.eps) == hp.eps
    if hasattr(hp, "at_fraction"):
        assert hp.at_fraction(0.1).eps == hp.eps


@pytest.mark.parametrize("changes, needle", [
    ({"policy_eps": [0.5, 5.0]}, "bad value 5 in the --policy-eps grid: eps must be in [0, 1]"),
    ({"policy_steps": [1, 2.5]}, "bad value 2.5 in the --policy-steps grid: steps must be an integer"),
    ({"policy_lr_mult": [0.0, 1.0]}, "bad value 0 in the --policy-lr-mult grid: lr must be > 0"),
    ({"policy_adv_mix": [0.5, 1.5]}, "--policy-adv-mix grid: adv_mix must be in [0, 1]"),
    ({"policy_steps": [3, 3]}, "--policy-steps lists a value twice"),
    ({"policy_lr": 0}, "policy_lr must be > 0"),
])
def test_bad_grid_values_are_one_line_errors(changes, needle):
    with pytest.raises(UserError) as info:
        policy_config(**changes)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_all_grids_empty_is_refused():
    with pytest.raises(UserError, match="at least one non-empty"):
        PolicyController(policy_config(**NO_GRIDS))


def test_policy_file_round_trip_and_wrong_files(tmp_path):
    trained = PolicyController(policy_config(seed=1))
    for p in trained.net.parameters():
        nn.init.normal_(p)
    save_policy_file(trained, tmp_path / "p.pt")
    fresh = PolicyController(policy_config(policy_file=str(tmp_path / "p.pt")))
    assert all(torch.equal(a, b) for a, b in zip(trained.net.state_dict().values(), fresh.net.state_dict().values()))
    bad = [
        (policy_config(policy_hidden=8, policy_file=str(tmp_path / "p.pt")), "does not fit this policy (--policy-hidden 8"),
        (policy_config(policy_adv_mix=[1.0], policy_file=str(tmp_path / "p.pt")), "was trained on grids"),
        (policy_config(policy_file=str(tmp_path / "missing.pt")), "not found"),
    ]
    for config, needle in bad:
        with pytest.raises(UserError) as info:
            PolicyController(config)
        assert needle in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_policy_file(fresh, tmp_path / "junk.pt")


def test_frozen_policy_acts_but_does_not_learn():
    controller = PolicyController(policy_config(policy_frozen=True))
    before = [p.clone() for p in controller.net.parameters()]
    for r in range(6):
        controller.propose(r)
        gain = 0.1 * (r % 3) - 0.1
        controller.observe(reward_row(r + 1, 0.4, 0.4 + gain, fgsm=0.9, grad_evals=100 * (r + 1), reward_grad_evals=10 * (r + 1)))
    assert all(torch.equal(a, b) for a, b in zip(before, controller.net.parameters()))
    assert set(controller.row_metrics()) == {"policy/reward", "policy/baseline", "policy/entropy", "policy/cost",
                                             "policy/gap", "policy/return", "policy/return_round"}
    # round 6 trained 10 examples for 100 grad evals (10 passes each), its reward check cost 10 more,
    # it gained 0.1 robust accuracy, and FGSM beat PGD by 0.4 on the reward batch
    m = controller.row_metrics()
    assert m["policy/cost"] == pytest.approx(110 / 110)
    assert m["policy/gap"] == pytest.approx(0.4)
    assert m["policy/reward"] == pytest.approx(0.1 - 0.01 * 1.0 - 0.05 * 0.4)
    assert m["policy/return"] == m["policy/reward"] and m["policy/return_round"] == 6  # immediate: its own reward
