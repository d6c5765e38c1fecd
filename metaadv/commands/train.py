"""``metaadv train``: adversarial training, one progress line per round."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import METHODS, OPTIMIZERS, LR_SCHEDULES, TrainConfig
from ..data import DATASETS
from ..attacks import NORMS
from ..errors import UserError
from ._flag_types import eps_value
from ._run_config import S, add_worker_flags, run_config, warn_if_bf16_is_emulated, worker_spec


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag for every TrainConfig field; shared by commands that build a TrainConfig."""
    d = TrainConfig()
    p.add_argument("--config", default=S, metavar="FILE", help="YAML or JSON file of config keys; flags override it")
    p.add_argument("--method", default=S, help=f"one of {', '.join(METHODS)} (default {d.method})")
    p.add_argument("--dataset", default=S, help=f"one of {', '.join(DATASETS)} (default {d.dataset})")
    p.add_argument("--arch", default=S, help="model architecture (default: the data set's)")
    p.add_argument("--epochs", "--rounds", dest="rounds", type=int, default=S, help=f"rounds to train (default {d.rounds})")
    p.add_argument("--steps-per-round", type=int, default=S, help="optimizer steps per round; 0 = one epoch (default)")
    p.add_argument("--batch-size", type=int, default=S, help=f"(default {d.batch_size})")
    p.add_argument("--optimizer", default=S, help=f"one of {', '.join(OPTIMIZERS)} (default {d.optimizer})")
    p.add_argument("--momentum", type=float, default=S, help="SGD momentum (default 0.9)")
    p.add_argument("--norm", default=S, help=f"threat model, one of {', '.join(NORMS)} (default {d.norm})")
    g = p.add_argument_group("per-round hyperparameters (targets of the schedule)")
    g.add_argument("--eps", type=eps_value("--eps"), default=S,
                   help=f"attack radius in pixel units, a number or a fraction such as 8/255: [0, 1] for linf, "
                        f"[0, sqrt(C*H*W)] for l2 (default {d.eps})")
    g.add_argument("--step-ratio", type=float, default=S, help="attack step size / eps (default: 0.25; fast-at 1.25)")
    g.add_argument("--steps", type=int, default=S, help="attack iterations (default: 10; fast-at 1; vat 1)")
    g.add_argument("--lr", type=float, default=S, help=f"learning rate (default {d.lr})")
    g.add_argument("--weight-decay", type=float, default=S, help=f"(default {d.weight_decay})")
    g.add_argument("--trades-beta", type=float, default=S, help=f"TRADES beta (default {d.trades_beta})")
    g.add_argument("--pgd-start", default=S, help="pgd-at: the attack's start, random (a uniform point of the ball; default) or zero (x itself)")
    g.add_argument("--adv-mix", type=float, default=S, help="weight of the adversarial loss vs the clean loss (default 1)")
    s = p.add_argument_group("schedule")
    s.add_argument("--controller", default=S, help="who picks the hyperparameters each round: schedule (default), policy, replay, or las (the schedule, with a learned attack per example)")
    s.add_argument("--schedule", default=S, metavar="FILE",
                   help="--controller replay: CSV of round and hp/* columns (a metrics.csv works); its values replace the schedule's")
    s.add_argument("--eps-ramp-fraction", type=float, default=S,
                   help="ramp eps linearly over this share of the budget (of the rounds without one), step by step (default 0.2; 0 = off)")
    s.add_argument("--eps-ramp-rounds", type=int, default=S,
                   help="the old schedule counted in rounds: ramp eps over this many rounds (0 = off), lr milestones at round boundaries (default -1: use --eps-ramp-fraction)")
    s.add_argument("--eps-ramp-by", default=S, help="with --eps-ramp-rounds: step (default: eps rises smoothly within each ramp round) or round (one value per round)")
    s.add_argument("--lr-schedule", default=S, help=f"one of {', '.join(LR_SCHEDULES)} (default {d.lr_schedule})")
    s.add_argument("--lr-milestones", type=float, nargs="+", default=S, help=f"fractions of the run (of the budget when set) where lr steps (default {' '.join(map(str, d.lr_milestones))})")
    s.add_argument("--lr-gamma", type=float, default=S, help="lr factor at each milestone (default 0.1)")
    m = p.add_argument_group("method specifics")
    m.add_argument("--vat-xi", type=float, default=S, help="VAT power-iteration step, a fraction of each input's L2 norm (default 1e-2)")
    m.add_argument("--vat-weight", type=float, default=S, help="VAT loss weight alpha (default 1)")
    m.add_argument("--unlabeled-fraction", type=float, default=S, help="VAT: hide this fraction of labels (default 0)")
    m.add_argument("--labels", type=int, default=S, help="VAT: keep exactly N training labels, class-balanced (default 0 = all)")
    m.add_argument("--co-guard", action=argparse.BooleanOptionalAction, default=S,
                   help="catastrophic-overfitting guard: on a collapse of val PGD accuracy revert to the best round and stop; "
                        "adds train/grad_align to the row (default on for fast-at, meta-generator, advgan, meta-adv)")
    m.add_argument("--co-threshold", type=float, default=S, help="--co-guard: robust-accuracy drop that counts as catastrophic overfitting (default 0.2)")
    m.add_argument("--co-gap", type=float, default=S, help="--co-guard: train adversarial accuracy minus val robust accuracy that counts as catastrophic overfitting, once eps is at its target (default 0.5)")
    m.add_argument("--co-guard-stop", action=argparse.BooleanOptionalAction, default=S,
                   help="--co-guard: stop after reverting (default); --no-co-guard-stop reverts to the best round and trains on to the budget")
    add_generator_and_policy_flags(p)
    v = p.add_argument_group("validation, data and device")
    v.add_argument("--val-size", type=int, default=S, help="validation examples measured each round (default 500; 0 = all)")
    v.add_argument("--val-pgd-steps", type=int, default=S, help="PGD steps of the per-round robust check (default 10)")
    v.add_argument("--val-attack", default=S, help="attack of the per-round robust check: pgd (default; PGD-N from one fixed start) "
                   "or apgd-ce (the reference AutoAttack's APGD-CE, seeded by seed and round; the eval extra)")
    v.add_argument("--val-apgd-iters", type=int, default=S, help="--val-attack apgd-ce: its iterations (default 20)")
    v.add_argument("--seed", type=int, default=S, help="(default 0)")
    v.add_argument("--device", default=S, help="auto, cpu or cuda (default auto)")
    v.add_argument("--precision", default=S, help="attack and training steps: fp32 (default), bf16 (autocast), "
                   "or auto (bf16 where the device computes it natively); validation and evaluate stay fp32")
    v.add_argument("--data-dir", default=S, help="folder of torchvision data sets")
    v.add_argument("--download", action="store_true", default=S, help="let torchvision download missing data (needs internet)")


def add_generator_and_policy_flags(p: argparse.ArgumentParser) -> None:
    """Flags of issue 3: perturbation generators and the REINFORCE policy controller."""
    d = TrainConfig()
    grid = {"type": float, "nargs": "*", "default": S, "metavar": "V"}
    g = p.add_argument_group("perturbation generators (methods meta-generator, advgan, meta-adv)")
    g.add_argument("--gen-lr", type=float, default=S, help=f"generator Adam step, per round (default {d.gen_lr})")
    g.add_argument("--gen-steps", type=int, default=S, help=f"generator updates per classifier update (default {d.gen_steps})")
    g.add_argument("--gen-fraction", type=float, default=S, help="fraction of each batch attacked by the generator, the rest by PGD (default 1)")
    g.add_argument("--gen-arch", default=S, help="recursive (L2L-DA: K steps, each reading a fresh gradient; default), "
                   "onestep (one pass; advgan's), or noise (no generator: a uniform point of the ball, the control)")
    g.add_argument("--gen-unroll", type=int, default=S, help=f"recursive: K, unrolled generator steps (default {d.gen_unroll})")
    g.add_argument("--gen-step-ratio", type=float, default=S, help=f"recursive: largest move per step / eps (default {d.gen_step_ratio})")
    g.add_argument("--gen-final-step", dest="gen_final_steps", action="store_const", const=1, default=S,
                   help="one signed-gradient step after the generator (the default)")
    g.add_argument("--no-gen-final-step", dest="gen_final_steps", action="store_const", const=0, default=S,
                   help="train on the generator's output as it is")
    g.add_argument("--gen-final-steps", type=int, default=S, metavar="N", help=f"signed-gradient steps after the generator (default {d.gen_final_steps})")
    g.add_argument("--gen-final-ratio", type=float, default=S, help=f"their step size / eps (default {d.gen_final_ratio})")
    g.add_argument("--gen-width", type=int, default=S, help=f"generator hidden channels (default {d.gen_width})")
    g.add_argument("--gen-grad-input", action=argparse.BooleanOptionalAction, default=S,
                   help="onestep: the generator also reads sign(grad_x loss), one classifier pass per example (default on; advgan off)")
    g.add_argument("--gen-noise", action=argparse.BooleanOptionalAction, default=S,
                   help="recursive: the generator also reads a Gaussian noise map (default off)")
    g.add_argument("--gen-diversity", type=float, default=S, help="recursive with --gen-noise: weight of L2L-DA's diversity term (default 0)")
    g.add_argument("--gen-start", default=S, help="recursive: delta_0, zero (L2L-DA's; default) or random (a uniform point of the ball)")
    g.add_argument("--gen-train-copies", type=int, default=S, help="recursive with --gen-diversity: 2 trains the classifier on "
                   "both noise draws' examples (L2L-DA's two adversarial copies), 1 on the first's (default 1)")
    g.add_argument("--gen-frozen", action="store_true", default=S,
                   help="the control: the generator keeps its initial weights, never updated (no passes spent on its learning)")
    g.add_argument("--gen-step-discount", type=float, default=S,
                   help="recursive: weight of unroll step t's loss is discount^(K-t); 1 = summed (default), 0 = last step only")
    g.add_argument("--advgan-alpha", type=float, default=S, help=f"AdvGAN weight of the GAN loss (default {d.advgan_alpha})")
    g.add_argument("--advgan-beta", type=float, default=S, help=f"AdvGAN weight of the norm hinge (default {d.advgan_beta})")
    g.add_argument("--advgan-hinge", type=float, default=S, help="AdvGAN hinge bound c as a fraction of the eps-ball's largest L2 norm (default 0.5)")
    r = p.add_argument_group("REINFORCE policy controller (--controller policy; the default of --method meta-adv)")
    r.add_argument("--policy-eps", **grid, help="grid of eps choices, as fractions of --eps (default 0.25 0.5 0.75 1); no values = schedule's")
    r.add_argument("--policy-step-ratio", **grid, help="grid of attack step ratios (default 0.1 0.25 0.5)")
    r.add_argument("--policy-steps", **grid, help="grid of attack steps (default 1 3 5 10)")
    r.add_argument("--policy-lr-mult", **grid, help="grid of multipliers of the schedule's lr (default 0.3 1 3)")
    r.add_argument("--policy-weight-decay", **grid, help="grid of weight decays (default 0 5e-4)")
    r.add_argument("--policy-adv-mix", **grid, help="grid of adv_mix values (default 0.5 1)")
    r.add_argument("--policy-cost-weight", type=float, default=S, help="lambda: reward = change in val robust acc - lambda * cost, cost 1 = one PGD-10 round (default 0.01)")
    r.add_argument("--policy-lr", type=float, default=S, help=f"beta, the policy's SGD step (default {d.policy_lr})")
    r.add_argument("--policy-entropy", type=float, default=S, help=f"entropy bonus (default {d.policy_entropy})")
    r.add_argument("--policy-baseline-rate", type=float, default=S, help=f"moving-average rate of the baseline (default {d.policy_baseline_rate})")
    r.add_argument("--policy-hidden", type=int, default=S, help=f"policy hidden units (default {d.policy_hidden})")
    r.add_argument("--policy-file", default=S, metavar="FILE", help="start from a policy saved with --save-policy")
    r.add_argument("--policy-frozen", action="store_true", default=S, help="act with the policy without updating it (without --policy-file: the uniform random-policy control)")
    r.add_argument("--policy-reward-size", type=int, default=S, help=f"validation examples in each round's fresh reward batch (default {d.policy_reward_size})")
    r.add_argument("--policy-reward-steps", type=int, default=S, help=f"PGD steps of the reward check (default {d.policy_reward_steps})")
    r.add_argument("--policy-gap-weight", type=float, default=S, help=f"mu: reward -= mu * max(0, FGSM acc - PGD acc) on the reward batch (default {d.policy_gap_weight})")
    r.add_argument("--policy-return", default=S, help=f"immediate (each round's reward) or discounted (n-step return) (default {d.policy_return})")
    r.add_argument("--policy-gamma", type=float, default=S, help=f"discount of --policy-return discounted (default {d.policy_gamma})")
    r.add_argument("--policy-horizon", type=int, default=S, help=f"rounds n in --policy-return discounted's n-step return (default {d.policy_horizon})")
    r.add_argument("--budget-grad-evals", type=int, default=S, help="stop once cost/grad_evals reaches this (default 0 = no budget)")
    r.add_argument("--budget-counts", default=S, help="what the budget counts: train (cost/grad_evals; default) or "
                   "train+decisions (plus cost/reward_grad_evals, the policy's reward checks)")
    r.add_argument("--tail-fraction", type=float, default=S, help="train the last fraction of the budget (of the rounds without one) "
                   "at the target eps with the configured attack, whatever the controller chooses (default 0 = off)")
    r.add_argument("--tail-steps", type=int, default=S, help="the tail's attack steps (default 0 = --steps)")
    r.add_argument("--tail-step-ratio", type=float, default=S, help="the tail's step size / eps (default 0 = --step-ratio)")
    add_las_flags(p)


def add_las_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the per-example attack strategy, ``--controller las`` (docs/las.md)."""
    d = TrainConfig()
    grid = {"type": float, "nargs": "*", "default": S, "metavar": "V"}
    g = p.add_argument_group("per-example attack strategy (--controller las, for pgd-at and trades; docs/las.md)")
    g.add_argument("--las-eps", **grid, help="grid of each example's eps, as fractions of --eps in (0, 2] (default 0.375 0.5 ... 1.75)")
    g.add_argument("--las-steps", **grid, help="grid of each example's PGD steps (default 3 4 ... 13)")
    g.add_argument("--las-step-ratio", **grid, help="grid of each example's step size / its eps (default 0.125 0.25 0.375 0.5)")
    g.add_argument("--las-lr", type=float, default=S, help=f"Adam step of the strategy network (default {d.las_lr})")
    g.add_argument("--las-hidden", type=int, default=S, help=f"channels of the strategy network (default {d.las_hidden})")
    g.add_argument("--las-interval", type=int, default=S, help=f"a strategy update every N batches (default {d.las_interval})")
    g.add_argument("--las-frozen", action="store_true", default=S,
                   help="act with the strategy, never update it: the uniform random-strategy control (no look-ahead cost)")
    g.add_argument("--las-lookahead-size", type=int, default=S,
                   help=f"examples of each update batch the one-step look-ahead is measured on (default {d.las_lookahead_size})")
    g.add_argument("--las-lookahead-steps", type=int, default=S, help=f"PGD steps of the look-ahead's check (default {d.las_lookahead_steps})")
    g.add_argument("--las-baseline-rate", type=float, default=S, help=f"moving-average rate of the reward baselines (default {d.las_baseline_rate})")
    g.add_argument("--las-loss-weight", type=float, default=S, help=f"reward weight of the attack's CE, capped at 10 (default {d.las_loss_weight})")
    g.add_argument("--las-robust-weight", type=float, default=S, help=f"reward weight of look-ahead robust correctness (default {d.las_robust_weight})")
    g.add_argument("--las-clean-weight", type=float, default=S, help=f"reward weight of look-ahead clean correctness (default {d.las_clean_weight})")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="adversarially train a classifier", description="Adversarially train a classifier, one round at a time.")
    p.add_argument("--out", required=True, help="run folder (config.json, metrics.csv, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--save-policy", default=None, metavar="FILE", help="after training, save the policy (--controller policy) here")
    add_config_flags(p)
    add_worker_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import read_checkpoint
    from ..training.trainer import DivergedError

    spec = worker_spec(args)
    if spec is None:
        config = run_config(args, TrainConfig, lambda path: read_checkpoint(path, kind="train"))
    else:  # a folder whose checkpoint.pt is gone still holds Ray Train's checkpoints
        from ..distributed.train import read_stored_state
        from ..training.las import check_las_workers

        config = run_config(args, TrainConfig, lambda path: read_stored_state(Path(path).parent, "train"))
        check_las_workers(config, spec.workers)
    _check_save_policy(args.save_policy, config)
    warn_if_bf16_is_emulated(config.precision, config.device)
    rounds = config.rounds
    if spec is None:
        from ..training.run import progress_line, run_training

        on_row = None if args.quiet else (lambda row, run: print(progress_line(row, rounds), flush=True))
        try:
            result = run_training(config, args.out, resume=args.resume, on_row=on_row)
        except DivergedError as exc:
            raise UserError(f"{exc}; the last good round is in {args.out}/checkpoint.pt") from None
        controller, stopped_reason = result.controller, result.stopped_reason
    else:
        from ..distributed.train import run_distributed
        from ..training.controllers import build_controller

        state = run_distributed("train", config, args.out, spec, resume=args.resume, address=args.address, quiet=args.quiet)
        stopped_reason = state["stopped_reason"]
        controller = build_controller(config)
        controller.load_state_dict(state["controller"])
    if args.save_policy:
        from ..training.policy import save_policy_file

        save_policy_file(controller, args.save_policy)
        print(f"policy saved: {args.save_policy} (drive another run with --controller policy --policy-file {args.save_policy})")
    if stopped_reason:
        print(f"stopped early: {stopped_reason}")
    print(f"done: {args.out}/checkpoint.pt (evaluate with: metaadv evaluate {args.out})")
    return 0


def _check_save_policy(path: str | None, config: TrainConfig) -> None:
    """Refuse --save-policy before training, not after it."""
    import os

    if path and config.controller != "policy":
        raise UserError(f"--save-policy needs --controller policy (this run's controller is {config.controller!r})")
    if path and os.path.isdir(path):
        raise UserError(f"--save-policy {path!r} is a folder; give a file name")
