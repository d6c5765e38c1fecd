"""``metaadv policy train``: meta-train one REINFORCE policy across whole training runs (docs/policy-train.md)."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import UserError
from ._run_config import given_values

# The command's own flags, kept out of the training config.
META_FLAGS = {"episodes": "episodes", "parallel": "parallel", "meta_lr": "lr", "meta_entropy": "entropy",
              "meta_baseline_rate": "baseline_rate"}


def _one_line_errors(p: argparse.ArgumentParser, name: str) -> None:
    def error(message: str):
        print(f"metaadv: error: {name}: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = error


def add_parser(sub) -> argparse.ArgumentParser:
    from .train import add_config_flags

    p = sub.add_parser("policy", help="meta-train a REINFORCE policy across training runs",
                       description="Learned hyperparameter policies: `metaadv policy train` (docs/policy-train.md).")
    _one_line_errors(p, "policy")
    actions = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    t = actions.add_parser("train", help="meta-train one policy over E training runs (episodes), then save it",
                           description="Meta-train one REINFORCE policy over E full training runs (episodes) at the "
                                       "budget it will be deployed at; the saved policy.pt deploys with "
                                       "metaadv train --controller policy --policy-file DIR/policy.pt --policy-frozen.")
    _one_line_errors(t, "policy train")
    t.add_argument("--out", required=True, metavar="DIR", help="folder: policy.pt, episodes.csv, meta_state.pt, summary.json")
    t.add_argument("--resume", action="store_true", help="continue the policy training in --out (the batch in flight reruns)")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.add_argument("--address", default=None, metavar="ADDR", help="join this Ray cluster ('auto', host:port) instead of starting one")
    m = t.add_argument_group("meta-training (defaults: episodes 64, parallel 8, meta-lr 0.02, meta-entropy 0.01, "
                             "meta-baseline-rate 0.2)")
    m.add_argument("--episodes", type=int, default=None, metavar="E", help="training runs (episodes), at least 2")
    m.add_argument("--parallel", type=int, default=None, metavar="P",
                   help="episodes per batch: run side by side as Ray tasks, one policy update per batch")
    m.add_argument("--meta-lr", type=float, default=None, help="Adam step of the policy update")
    m.add_argument("--meta-entropy", type=float, default=None, help="entropy bonus c of the policy update")
    m.add_argument("--meta-baseline-rate", type=float, default=None,
                   help="moving-average rate of the per-decision-index baselines")
    add_config_flags(t)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import TrainConfig
    from ..training.policy_train import MetaSettings, prepare, read_stored_state

    config_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in (*META_FLAGS, "policy_command")})
    given = given_values(config_args)
    if given.get("controller", "policy") != "policy":
        raise UserError(f"metaadv policy train trains the policy controller; drop --controller {given['controller']}")
    settings_given = {field: getattr(args, flag) for flag, field in META_FLAGS.items() if getattr(args, flag) is not None}
    if args.resume:
        state = read_stored_state(args.out)
        config = TrainConfig.from_dict({**state["config"], **given})
        settings = MetaSettings(**{**state["settings"], **settings_given})
    else:
        config = TrainConfig.from_dict({**given, "controller": "policy"})
        settings = MetaSettings(**settings_given)
    trainer = prepare(config, args.out, settings, resume=args.resume)  # every check, before anything is written
    if trainer.finished:
        print(f"already finished: {args.out} holds all {settings.episodes} episodes (deploy {args.out}/policy.pt)")
        return 0
    return _train(config, settings, args)


def _train(config, settings, args) -> int:
    from ..distributed.policy_episodes import ray_episode_runner
    from ..training.policy_train import train_policy

    batches = -(-settings.episodes // settings.parallel)
    start = time.perf_counter()

    def on_batch(info: dict) -> None:
        if not args.quiet:
            e = info["episodes"]
            loss = "-" if info["loss"] is None else f"{info['loss']:+.4f}"
            print(f"batch {info['batch'] + 1:>3}/{batches}  episodes {e[0]}-{e[-1]}  mean return {info['mean_return']:.3f}  "
                  f"loss {loss}  {time.perf_counter() - start:.0f}s", flush=True)

    with ray_episode_runner(args.address, settings.parallel) as run_batch:
        summary = train_policy(config, args.out, settings, resume=args.resume, run_batch=run_batch, on_batch=on_batch)
    cost = summary["meta_cost"]
    print(f"meta-training cost: {cost['total_grad_evals']:.4g} grad evals over {summary['episodes']} episodes "
          f"({' + '.join(cost['columns'])})")
    print(f"done: {args.out}/policy.pt (deploy with: metaadv train --controller policy --policy-file "
          f"{args.out}/policy.pt --policy-frozen and the same --policy-* grids)")
    return 0
