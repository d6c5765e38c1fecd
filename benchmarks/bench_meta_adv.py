"""Meta-adversarial training benchmark: generator-AT round cost vs PGD-10 AT, and the policy's overhead.

Prints, measured in one run on mnist5k with the seed CNN (batch 100), in CPU seconds of this
process with the settings' rounds interleaved (a shared machine's load then cancels out):
- each generator method's round time / PGD-10 AT round time, next to the ratio of their
  cost/grad_evals: the recursive generator (K = 3, width 8, the last step's loss: the defaults) with
  and without the final gradient step (target for K = 3 with the final step: <= 0.6, issue 11), the
  same at width 4, and with L2L-DA's loss summed over the steps at width 16, the one-step generator with and
  without the gradient-sign input, AdvGAN, and the uniform-noise control (noise + final step);
- the REINFORCE policy's overhead per round: propose + observe (one forward, one sampled action,
  one SGD step), against the fixed schedule's and as a fraction of a PGD-10 round.
"""

from __future__ import annotations

import argparse
import time

import torch

from metaadv.config import TrainConfig
from metaadv.data import load_splits
from metaadv.training.controllers import ScheduleController
from metaadv.training.policy import PolicyController
from metaadv.training.trainer import Trainer

from _timing import add_round_args, header, interleaved_round_seconds  # benchmarks/_timing.py


def make_trainer(splits, device: str, **config) -> tuple[Trainer, object]:
    cfg = TrainConfig.from_dict({"device": device, **config})
    trainer = Trainer(cfg, splits, torch.device(device))
    trainer.train_round(cfg.hparams())  # warm-up: allocator, kernels
    return trainer, cfg.hparams()


def controller_ms(controller, rounds: int) -> float:
    """CPU milliseconds of propose + observe + row_metrics per round (the policy's reward check is
    attack compute, timed apart by :func:`reward_check_seconds`)."""
    row = {"val/clean_acc": 0.9, "val/robust_acc": 0.5, "train/loss": 1.0, "train/adv_acc": 0.4,
           "policy/robust_acc_before": 0.5, "policy/robust_acc": 0.5, "policy/clean_acc": 0.9, "policy/fgsm_acc": 0.6}
    t = time.process_time()
    for r in range(rounds):
        controller.propose(r)
        controller.observe({**row, "round": r + 1, "step": 10 * (r + 1), "cost/grad_evals": 11_000 * (r + 1),
                            "cost/reward_grad_evals": 2_100 * (r + 1)})
        getattr(controller, "row_metrics", dict)()
    return 1000 * (time.process_time() - t) / rounds


def reward_check_seconds(trainer: Trainer, rounds: int = 3) -> float:
    """Wall seconds of the policy's reward check per round: PGD before and after, clean and FGSM after."""
    t = time.perf_counter()
    for r in range(rounds):
        trainer.reward_check(r, before=True)
        trainer.reward_check(r, before=False)
    return (time.perf_counter() - t) / rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_args(p)
    args = p.parse_args()
    splits = load_splits("mnist5k")
    print(header(args))
    common = {"steps_per_round": args.steps_per_round, "eps_ramp_rounds": 0}
    recursive = {"method": "meta-generator", "gen_arch": "recursive", "gen_unroll": 3}
    onestep = {"method": "meta-generator", "gen_arch": "onestep", "gen_final_steps": 0, "gen_width": 16}
    settings = {"PGD-10 AT": ({"method": "pgd-at", "steps": 10}, None),
                "recursive K=3 + final step": ({**recursive, "gen_final_steps": 1}, 0.6),
                "recursive K=3, no final step": ({**recursive, "gen_final_steps": 0}, None),
                "recursive K=3 + final, width 4": ({**recursive, "gen_final_steps": 1, "gen_width": 4}, 0.6),
                "recursive K=3 + final, L2L-DA": ({**recursive, "gen_final_steps": 1, "gen_step_discount": 1.0, "gen_width": 16},
                                                   None),  # the loss summed over the steps, width 16
                "one-step (grad-sign input)": (onestep, None),
                "one-step (x only)": ({**onestep, "gen_grad_input": False}, None),
                "advgan (x only)": ({"method": "advgan", "gen_final_steps": 0}, None),
                "noise + final step (control)": ({"method": "meta-generator", "gen_arch": "noise", "gen_final_steps": 1}, None)}
    trainers = {name: make_trainer(splits, args.device, **common, **extra) for name, (extra, _) in settings.items()}
    measured = interleaved_round_seconds(trainers, args.rounds, args.device)
    pgd_s, pgd_cost = measured.pop("PGD-10 AT")
    print(f"PGD-10 AT round: {pgd_s:.3f} s ({pgd_cost:g} grad evals / example)")
    print(f"{'generator AT':<34} {'round s':>8} {'time ratio':>11} {'cost ratio':>11}  target")
    for label, (seconds, cost) in measured.items():
        ratio, target = seconds / pgd_s, settings[label][1]
        verdict = "" if target is None else f"<= {target}: {'ok' if ratio <= target else 'over target'}"
        print(f"{label:<34} {seconds:>8.3f} {ratio:>11.2f} {cost / pgd_cost:>11.2f}  {verdict}")
    config = TrainConfig.from_dict({"controller": "policy", "rounds": 1000})
    policy_ms, schedule_ms = controller_ms(PolicyController(config), 200), controller_ms(ScheduleController(config), 200)
    print(f"policy overhead per round: {policy_ms:.2f} ms (fixed schedule {schedule_ms:.3f} ms) = "
          f"{policy_ms / (1000 * pgd_s):.2%} of a PGD-10 round of {args.steps_per_round} steps")
    check_s = reward_check_seconds(trainers["PGD-10 AT"][0])
    print(f"policy reward check per round (defaults: {config.policy_reward_size} examples, PGD-{config.policy_reward_steps} "
          f"twice + FGSM): {check_s:.3f} s = {check_s / pgd_s:.2f} of that PGD-10 round")


if __name__ == "__main__":
    main()
