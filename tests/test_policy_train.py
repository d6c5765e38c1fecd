"""``metaadv policy train``: the per-index-baseline REINFORCE math by hand, frozen episodes, a toy the
meta-trainer must solve, resume, break-even, and a tiny real run with Ray deployed via --policy-file."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from metaadv.checkpoint import read_checkpoint
from metaadv.cli import main
from metaadv.config import TrainConfig
from metaadv.models.policy import PolicyNet, episode_reinforce_loss, index_baselines, update_index_baselines
from metaadv.training.policy import PolicyController
from metaadv.training.policy_episode import COST_COLUMNS, episode_config
from metaadv.training.policy_train import MetaSettings, break_even_models, prepare, train_policy

from .conftest import local_ray
from .test_policy import NO_GRIDS, reward_row

pytestmark = pytest.mark.margins

TOY_GRID = [0.25, 0.5, 0.75, 1.0]
TOY_BEST = 2  # eps 0.75: the toy's return counts how often an episode picked it


def toy_config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({"dataset": "digits", "controller": "policy", "batch_size": 10, "rounds": 100,
                                  **NO_GRIDS, "policy_eps": TOY_GRID, **changes})


def toy_episode(config: dict, net_state: dict, seed: int, decisions: int = 3) -> dict:
    """An episode without training: the real (frozen) controller decides ``decisions`` times on
    made-up rows; the return is the fraction of its choices that were eps 0.75, plus seeded noise."""
    run_config = episode_config(TrainConfig.from_dict(config), seed)
    controller = PolicyController(run_config)
    controller.net.load_state_dict(net_state)
    picks = []
    for r in range(decisions):
        picks.append(TOY_GRID.index(round(controller.propose(r).eps / run_config.eps, 6)))
        controller.observe(reward_row(r + 1, 0.5, 0.5))
    noise = 0.05 * torch.randn(1, generator=torch.Generator().manual_seed(seed)).item()
    return {"return": sum(p == TOY_BEST for p in picks) / decisions + noise, "diverged": False, "rounds": decisions,
            "seconds": 0.0, "cost/grad_evals": 100, "cost/reward_grad_evals": 10, "cost/eval_grad_evals": 1,
            "decisions": controller.decision_record()}


def best_action_probability(policy_net) -> float:
    """pi(eps 0.75 | the state of a run's first decision)."""
    state = PolicyController(toy_config()).state
    with torch.no_grad():
        return torch.softmax(policy_net(state[None])[0], 1)[0, TOY_BEST].item()


# ---------------------------------------------------------------------------------------------
# The math, by hand.
# ---------------------------------------------------------------------------------------------


def test_per_index_baselines_by_hand():
    # Index 0 sees returns 1, 0, 0.5; index 1 sees 1 and 0.5; index 2 sees 0.5 (rate 0.5: a plain
    # mean over the first two episodes of an index, then b += 0.5 (G - b)).
    b, n = update_index_baselines([], [], [(1.0, 2), (0.0, 1), (0.5, 3)], rate=0.5)
    assert b == pytest.approx([0.5, 0.75, 0.5]) and n == [3, 2, 1]
    b, n = update_index_baselines(b, n, [(1.5, 1)], rate=0.5)  # 0.5 + 0.5 * (1.5 - 0.5)
    assert b == pytest.approx([1.0, 0.75, 0.5]) and n == [4, 2, 1]
    got = index_baselines([0.5, 0.75], torch.tensor([0, 1, 2, 0]), fallback=0.2)
    assert got.tolist() == pytest.approx([0.5, 0.75, 0.2, 0.5])  # index 2 has no history: the fallback


def test_episode_reinforce_gradient_matches_a_hand_computation():
    torch.manual_seed(0)
    net = PolicyNet(2, [3], hidden=3)
    nn.init.normal_(net.heads[0].weight)
    nn.init.normal_(net.heads[0].bias)
    states = torch.tensor([[0.5, -1.0], [0.1, 0.3], [-0.7, 0.2]])
    actions = torch.tensor([[2], [0], [1]])
    returns = torch.tensor([0.6, 0.6, 0.2])  # decisions 0, 1 from one episode, 2 from another
    baselines = torch.tensor([0.5, 0.3, 0.4])
    c = 0.05
    episode_reinforce_loss(net(states), actions, returns, baselines, c).backward()
    with torch.no_grad():
        adv = returns - baselines  # 0.1, 0.3, -0.2
        sigma = ((0.1**2 + 0.3**2 + 0.2**2) / 3) ** 0.5
        expected = torch.zeros(3)
        for i in range(3):
            h = torch.tanh(net.body[0].weight @ states[i] + net.body[0].bias)
            p = torch.softmax(net.heads[0].weight @ h + net.heads[0].bias, 0)
            entropy = -(p * p.log()).sum()
            dlogp = torch.eye(3)[actions[i, 0]] - p
            dentropy = -p * (p.log() + entropy)
            expected += -(adv[i] / sigma * dlogp + c * dentropy) / 3  # d loss / d bias, averaged over decisions
    assert torch.allclose(net.heads[0].bias.grad, expected, atol=1e-6)


def test_tiny_advantages_are_not_blown_up():
    logits = [torch.zeros(2, 2, requires_grad=True)]
    loss = episode_reinforce_loss(logits, torch.tensor([[0], [1]]), torch.tensor([0.5, 0.5]),
                                  torch.tensor([0.5 - 1e-5, 0.5 + 1e-5]), entropy_coef=0.0)
    loss.backward()
    assert logits[0].grad.abs().max().item() < 1e-2  # divided by the floor 1e-3, not by their own size 1e-5


def test_break_even_models():
    assert break_even_models(1000.0, 10.0, 20.0) == 100  # (1000 + 100 * 10) / 100 = 20 <= 20; 99 gives 20.1
    assert break_even_models(1001.0, 10.0, 20.0) == 101
    assert break_even_models(0.3, 0.1, 0.2) == 3  # float rounding in 0.3 / 0.1
    assert break_even_models(0.0, 5.0, 5.0) == 1
    assert break_even_models(50.0, 5.0, 5.0) is None  # models no cheaper: never
    assert break_even_models(50.0, 6.0, 5.0) is None
    with pytest.raises(ValueError):
        break_even_models(-1.0, 1.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Episodes act frozen; the meta-trainer learns across them.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frozen", [True, False])
def test_an_episode_policy_does_not_move_but_an_in_run_learner_does(frozen):
    config = toy_config(policy_cost_weight=0)
    controller = PolicyController(episode_config(config, 30_000) if frozen else config)
    before = {k: v.clone() for k, v in controller.net.state_dict().items()}
    for r in range(6):  # rewards that differ, so an unfrozen policy has something to learn from
        controller.propose(r)
        controller.observe(reward_row(r + 1, 0.5, 0.5 + 0.01 * (r % 3)))
    moved = any(not torch.equal(before[k], v) for k, v in controller.net.state_dict().items())
    assert moved is not frozen
    record = controller.decision_record()
    assert record["index"].tolist() == list(range(6)) and record["actions"].shape == (6, 1)
    assert record["states"].shape == (6, len(controller.state))


def test_a_real_episode_that_diverges_returns_zero_with_its_last_decision(monkeypatch):
    """run_episode in this process on tiny sizes; the second round's training loss 'diverges'."""
    from metaadv.training import policy_episode
    from metaadv.training.trainer import DivergedError, Trainer

    real_round, calls = Trainer.train_round, []

    def train_round(self, hp, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DivergedError("training loss became nan")
        return real_round(self, hp, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_round", train_round)
    config = toy_config(rounds=4, steps_per_round=1, val_size=8, val_pgd_steps=1, policy_reward_size=8,
                        policy_reward_steps=1, device="cpu")
    weights = {k: v.clone() for k, v in PolicyController(config).net.state_dict().items()}
    result = policy_episode.run_episode(config.to_dict(), weights, 30_000)
    assert result["diverged"] and result["return"] == 0.0 and result["rounds"] == 1
    assert result["decisions"]["index"].tolist() == [0, 1]  # round 1's, and round 2's that diverged
    assert result["decisions"]["round"].tolist() == [0, 1]
    assert result["cost/grad_evals"] > 0 and result["cost/reward_grad_evals"] > 0


def test_an_episode_validates_its_return_at_val_eps_as_a_tune_trial_does(monkeypatch):
    """A study trains at eps 0.3 and validates at its threat eps: the episode's return is read there."""
    from metaadv.training import policy_episode
    from metaadv.training.run import TrainingRun

    seen = []
    real_init = TrainingRun.__init__

    def spy(self, config, *a, **k):
        seen.append((config.eps, k["controller"].eps_target))
        real_init(self, config, *a, **k)

    monkeypatch.setattr(TrainingRun, "__init__", spy)
    config = toy_config(rounds=1, steps_per_round=1, val_size=8, val_pgd_steps=1, policy_reward_size=8,
                        policy_reward_steps=1, device="cpu")
    weights = {k: v.clone() for k, v in PolicyController(config).net.state_dict().items()}
    policy_episode.run_episode({**config.to_dict(), "val_eps": 0.1}, weights, 30_000)
    policy_episode.run_episode(config.to_dict(), weights, 30_000)
    assert seen == [(0.1, config.eps), (config.eps, config.eps)]  # the policy's grid stays relative to the training eps


def test_decision_record_survives_a_resume():
    controller = PolicyController(toy_config())
    for r in range(3):
        controller.propose(r)
        controller.observe(reward_row(r + 1, 0.5, 0.5))
    copy = PolicyController(toy_config())
    copy.load_state_dict(controller.state_dict())
    for key, value in controller.decision_record().items():
        assert torch.equal(value, copy.decision_record()[key])


def test_meta_trainer_raises_the_probability_of_the_better_action(tmp_path):
    config = toy_config(seed=5)
    start = best_action_probability(PolicyController(config).net)
    summary = train_policy(config, tmp_path / "toy", MetaSettings(episodes=48, parallel=4),
                           episode_fn=toy_episode)
    trained = read_checkpoint(tmp_path / "toy" / "policy.pt")
    net = PolicyController(config).net
    net.load_state_dict(trained["net"])
    assert start == pytest.approx(0.25)  # the uniform start
    assert best_action_probability(net) > 0.6
    assert summary["mean_return_last_batch"] > summary["mean_return_first_batch"] + 0.2


def test_resume_after_a_stop_gives_the_same_policy(tmp_path):
    config, settings = toy_config(seed=1), MetaSettings(episodes=8, parallel=2, lr=0.05)
    train_policy(config, tmp_path / "whole", settings, episode_fn=toy_episode)

    def stops_in_batch_two(config, net_state, seed):
        if seed == 30_005:  # the second episode of the third batch
            raise KeyboardInterrupt
        return toy_episode(config, net_state, seed)

    with pytest.raises(KeyboardInterrupt):
        train_policy(config, tmp_path / "cut", settings, episode_fn=stops_in_batch_two)
    assert prepare(config, tmp_path / "cut", settings, resume=True).episodes_done == 4  # the batch in flight is lost
    assert not (tmp_path / "cut" / "summary.json").exists()
    train_policy(config, tmp_path / "cut", settings, resume=True, episode_fn=toy_episode)
    whole, cut = (read_checkpoint(tmp_path / d / "meta_state.pt") for d in ("whole", "cut"))
    for k, v in whole["net"].items():
        assert torch.equal(v, cut["net"][k]), k
    assert whole["baselines"] == cut["baselines"] and whole["rows"] == cut["rows"]
    assert (tmp_path / "whole" / "episodes.csv").read_text() == (tmp_path / "cut" / "episodes.csv").read_text()


def test_resume_refuses_changed_settings(tmp_path):
    config, settings = toy_config(), MetaSettings(episodes=2, parallel=2)
    train_policy(config, tmp_path / "run", settings, episode_fn=toy_episode)
    with pytest.raises(Exception, match="--parallel"):
        prepare(config, tmp_path / "run", MetaSettings(episodes=2, parallel=1), resume=True)


# ---------------------------------------------------------------------------------------------
# A tiny real run: Ray tasks, the files, and the saved policy deployed frozen on a fresh seed.
# ---------------------------------------------------------------------------------------------

TINY_RUN = ["--dataset", "digits", "--steps-per-round", "2", "--batch-size", "50", "--val-size", "50",
            "--val-pgd-steps", "3", "--epochs", "10", "--budget-grad-evals", "2500", "--device", "cpu",
            "--policy-reward-size", "20", "--policy-reward-steps", "2", "--policy-steps", "1", "3",
            "--policy-lr-mult", "--policy-weight-decay", "--policy-adv-mix"]


@pytest.fixture(scope="module")
def ray_session():
    with local_ray("p22-") as address:
        yield address


@pytest.mark.slow  # 60 s on 2 busy cores (a Ray start, two episodes side by side, one deployed run)
def test_tiny_real_run_with_ray_writes_its_files_and_deploys(tmp_path, ray_session):
    out = tmp_path / "meta"
    assert main(["policy", "train", "--out", str(out), "--episodes", "2", "--parallel", "2", "--quiet", *TINY_RUN]) == 0
    assert {p.name for p in out.iterdir()} >= {"policy.pt", "episodes.csv", "meta_state.pt", "summary.json", "config.json"}
    with open(out / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == [30_000, 30_001]
    assert all(0.0 <= float(r["return"]) <= 1.0 and int(r["decisions"]) >= 1 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    total = sum(int(r[c]) for r in rows for c in COST_COLUMNS)
    assert summary["meta_cost"]["total_grad_evals"] == total > 0
    state = read_checkpoint(out / "meta_state.pt")
    assert len(state["baselines"]) == max(int(r["decisions"]) for r in rows)

    deployed = tmp_path / "deployed"
    argv = ["train", "--out", str(deployed), "--controller", "policy", "--policy-file", str(out / "policy.pt"),
            "--policy-frozen", "--seed", "0", "--quiet", *TINY_RUN]
    assert main(argv) == 0
    policy = read_checkpoint(out / "policy.pt")
    run_net = read_checkpoint(deployed / "checkpoint.pt")["controller"]["net"]
    for k, v in policy["net"].items():
        assert torch.equal(v, run_net[k]), k  # deployed, and frozen: the weights it ends with are the file's
