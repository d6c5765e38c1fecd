"""The REINFORCE policy: its gradient by hand, a bandit it must solve, grids, files and bad input."""

import pytest
import torch
from torch import nn

from metaadv.config import TrainConfig
from metaadv.errors import UserError
from metaadv.models.policy import PolicyNet, discounted_returns, log_prob_and_entropy, reinforce_loss, sample_actions
from metaadv.training.hparams import HParams
from metaadv.training.policy import PolicyController, apply_choices, load_policy_file, save_policy_file

pytestmark = pytest.mark.margins  # numeric tolerances: swept under other CPU kernels

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


# --- returns: immediate and discounted n-step -----------------------------------------------------

def test_discounted_returns_match_a_hand_computation():
    rewards = [1.0, 2.0, 3.0, 4.0]
    assert discounted_returns(rewards, 0.5, 3) == pytest.approx([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3 + 0.25 * 4])
    assert discounted_returns(rewards, 0.9, 1) == rewards  # horizon 1: the immediate rewards
    assert discounted_returns(rewards, 1.0, 4) == [10.0]
    assert discounted_returns(rewards, 0.5, 5) == []  # not one return complete yet
    with pytest.raises(ValueError):
        discounted_returns(rewards, 1.5, 2)


def test_discounted_reinforce_step_matches_a_hand_computation():
    """Horizon 2, gamma 0.5: round t's choice is credited with r_t + 0.5 r_{t+1} one round later,
    compared with a baseline of the earlier returns; the SGD step is the hand gradient times beta."""
    beta, c, gamma = 0.1, 0.05, 0.5
    config = policy_config(**{**NO_GRIDS, "policy_eps": [0.5, 1.0], "policy_adv_mix": [0.5, 0.75, 1.0]},
                           policy_return="discounted", policy_gamma=gamma, policy_horizon=2, policy_lr=beta,
                           policy_entropy=c, policy_cost_weight=0, policy_gap_weight=0)
    controller = PolicyController(config)
    torch.manual_seed(3)
    for head in controller.net.heads:  # away from the uniform start, so every term is non-zero
        nn.init.normal_(head.weight)
        nn.init.normal_(head.bias)
    rewards = [0.0, 0.2, 0.2, 0.1]  # returns G1 = 0.1, G2 = 0.3, G3 = 0.25
    for t, r in enumerate(rewards[:3], start=1):
        controller.propose(t - 1)
        controller.observe(reward_row(t, 0.5, 0.5 + r))
    assert controller.row_metrics()["policy/return"] == pytest.approx(0.3)  # G2, known at round 3
    assert controller.row_metrics()["policy/return_round"] == 2
    decision = dict(controller.window[0])  # round 3's choice, waiting for round 4's reward
    assert decision["round"] == 3
    params = {k: v.clone() for k, v in controller.net.state_dict().items()}
    controller.propose(3)
    controller.observe(reward_row(4, 0.5, 0.5 + rewards[3]))
    m = controller.row_metrics()
    assert m["policy/return"] == pytest.approx(0.2 + gamma * 0.1) and m["policy/return_round"] == 3
    # baseline after G1, G2: their mean 0.2; spread: rate 1/2 of the squared deviation 0.2^2
    assert m["policy/baseline"] == pytest.approx(0.2)
    advantage = (0.25 - 0.2) / (0.5 * 0.2**2) ** 0.5
    new = controller.net.state_dict()
    with torch.no_grad():
        s, w, b = decision["state"], params["body.0.weight"], params["body.0.bias"]
        h = torch.tanh(w @ s + b)
        grad_h = torch.zeros_like(h)
        for k in range(2):
            hw, hb = params[f"heads.{k}.weight"], params[f"heads.{k}.bias"]
            p = torch.softmax(hw @ h + hb, 0)
            entropy = -(p * p.log()).sum()
            dz = -(advantage * (torch.eye(len(p))[decision["actions"][k]] - p) + c * (-p * (p.log() + entropy)))
            assert torch.allclose(new[f"heads.{k}.bias"], hb - beta * dz, atol=1e-6)
            assert torch.allclose(new[f"heads.{k}.weight"], hw - beta * torch.outer(dz, h), atol=1e-6)
            grad_h += hw.T @ dz
        dpre = grad_h * (1 - h**2)
        assert torch.allclose(new["body.0.weight"], w - beta * torch.outer(dpre, s), atol=1e-6)
        assert torch.allclose(new["body.0.bias"], b - beta * dpre, atol=1e-6)


def test_immediate_returns_credit_each_round_and_discounted_ones_wait():
    rows = [reward_row(t, 0.5, 0.5 + 0.01 * t) for t in range(1, 5)]
    seen = {}
    for mode in ("immediate", "discounted"):
        controller = PolicyController(policy_config(policy_return=mode, policy_horizon=3, policy_gamma=0.5,
                                                    policy_cost_weight=0))
        seen[mode] = []
        for t, row in enumerate(rows):
            controller.propose(t)
            controller.observe(row)
            seen[mode].append(controller.row_metrics().get("policy/return_round"))
    assert seen["immediate"] == [1, 2, 3, 4]
    assert seen["discounted"] == [None, None, 1, 2]
    assert controller.row_metrics()["policy/return"] == pytest.approx(0.02 + 0.5 * 0.03 + 0.25 * 0.04)


# --- the reward: gap penalty, cost, fresh paired batches -----------------------------------------

def test_gap_penalty_counts_only_fgsm_beating_pgd():
    controller = PolicyController(policy_config(policy_gap_weight=0.2, policy_cost_weight=0))
    for t, (fgsm, expected_gap) in enumerate([(0.9, 0.6), (0.2, 0.0)], start=1):
        controller.propose(t - 1)
        controller.observe(reward_row(t, 0.25, 0.3, fgsm=fgsm))
        assert controller.row_metrics()["policy/gap"] == pytest.approx(expected_gap)
        assert controller.row_metrics()["policy/reward"] == pytest.approx(0.05 - 0.2 * expected_gap)


def test_reward_check_draws_a_fresh_paired_batch_each_round(digits_splits, monkeypatch):
    import metaadv.training.trainer as trainer_module
    from metaadv.training.run import TrainingRun

    calls = []
    real = trainer_module.reward_check

    def spy(model, x, y, *, start, **kw):
        calls.append((x.clone(), start.get_state().clone(), kw["steps"]))
        return real(model, x, y, start=start, **kw)

    monkeypatch.setattr(trainer_module, "reward_check", spy)
    config = TrainConfig.from_dict({"dataset": "digits", "controller": "policy", "rounds": 2, "steps_per_round": 2,
                                    "batch_size": 16, "val_size": 32, "val_pgd_steps": 2, "steps": 2,
                                    "policy_reward_size": 40, "policy_reward_steps": 3})
    run = TrainingRun(config, splits=digits_splits)
    rows = [run.step() for _ in range(2)]
    (x0b, s0b, k), (x0a, s0a, _), (x1b, s1b, _), (x1a, _, _) = calls
    assert k == 3 and x0b.shape[0] == 40
    assert torch.equal(x0b, x0a) and torch.equal(s0b, s0a)  # before and after: same examples, same start
    assert torch.equal(x1b, x1a) and not torch.equal(x0b, x1b) and not torch.equal(s0b, s1b)  # fresh each round
    assert not torch.equal(x0b, run.trainer.val_x[:40])  # not the logged validation subset
    # per round: PGD-3 before and after, FGSM after, 40 examples each
    assert [r["cost/reward_grad_evals"] for r in rows] == [(3 + 3 + 1) * 40, 2 * (3 + 3 + 1) * 40]
    for row in rows:
        assert 0 <= row["policy/robust_acc"] <= row["policy/clean_acc"] <= 1 and 0 <= row["policy/fgsm_acc"] <= 1
        assert row["policy/gap"] == pytest.approx(max(0.0, row["policy/fgsm_acc"] - row["policy/robust_acc"]))
    # the cost term counts the reward check: round 2 trained 32 examples and checked 40 for 280
    trained = rows[1]["cost/grad_evals"] - rows[0]["cost/grad_evals"]
    assert trained > 0 and rows[1]["policy/cost"] == pytest.approx((trained + 7 * 40) / (11 * 32))
    # same weights, same round: the same numbers (the check is a pure function of (seed, round))
    again = run.trainer.reward_check(1, before=False)
    assert again == {k: rows[1][k] for k in again}


def test_reward_size_larger_than_the_validation_split_is_a_one_line_error(digits_splits):
    from metaadv.training.run import TrainingRun

    with pytest.raises(UserError) as info:
        TrainingRun(policy_config(policy_reward_size=100_000), splits=digits_splits)
    assert "exceeds the validation split" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("changes, needle", [
    ({"policy_return": "monte-carlo"}, "unknown policy_return 'monte-carlo'; choose one of immediate, discounted"),
    ({"policy_gamma": 1.5}, "policy_gamma must be in [0, 1], got 1.5"),
    ({"policy_horizon": 0}, "policy_horizon must be >= 1, got 0"),
    ({"policy_reward_size": 0}, "policy_reward_size must be >= 1, got 0"),
    ({"policy_reward_steps": 0}, "policy_reward_steps must be >= 1, got 0"),
    ({"policy_gap_weight": -0.1}, "policy_gap_weight must be >= 0, got -0.1"),
])
def test_bad_reward_and_return_settings_are_one_line_errors(changes, needle):
    with pytest.raises(UserError) as info:
        policy_config(**changes)
    assert needle in str(info.value) and "\n" not in str(info.value)


# --- the random-policy control -------------------------------------------------------------------

def test_frozen_policy_without_a_file_is_uniform_and_never_changes():
    controller = PolicyController(policy_config(policy_frozen=True, seed=4))
    start = [p.clone() for p in controller.net.parameters()]
    noise = torch.Generator().manual_seed(1)
    counts = {dim: [0] * len(grid) for dim, grid in controller.grids.items()}
    draws = 1200
    for t in range(draws):
        hp = controller.propose(t)
        logits = controller.net(controller.state[None])
        for z in logits:  # exactly uniform, whatever the state
            assert torch.allclose(torch.softmax(z, 1), torch.full_like(z, 1 / z.shape[1]))
        for (dim, grid), a in zip(controller.grids.items(), controller.pending["actions"]):
            counts[dim][a] += 1
        assert round(hp.eps / 0.3, 6) == controller.grids["eps"][controller.pending["actions"][0]]
        gain = torch.randn(1, generator=noise).item() * 0.1
        controller.observe(reward_row(t + 1, 0.5, 0.5 + gain, grad_evals=100 * t))
    assert all(torch.equal(a, b) for a, b in zip(start, controller.net.parameters()))
    for dim, c in counts.items():
        n = len(c)
        # each value's frequency within 4 standard errors of 1/n
        se = (1 / n * (1 - 1 / n) / draws) ** 0.5
        assert all(abs(k / draws - 1 / n) < 4 * se for k in c), (dim, c)


def test_a_policy_state_from_before_the_reward_check_is_refused_in_one_line():
    controller = PolicyController(policy_config())
    old = controller.state_dict()
    del old["window"]
    with pytest.raises(UserError) as info:
        controller.load_state_dict(old)
    assert "predates the policy's own reward check" in str(info.value) and "\n" not in str(info.value)
