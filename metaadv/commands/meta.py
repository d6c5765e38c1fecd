"""``metaadv meta`` (meta-train, one progress line per round) and ``metaadv meta-evaluate``.

Both sub-commands live in this one module: ``add_parser`` registers ``meta-evaluate`` with its
own ``_run`` and returns the ``meta`` parser, to which the CLI attaches :func:`run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ._flag_types import eps_value
from ._run_config import S, add_worker_flags, run_config, warn_if_bf16_is_emulated, worker_spec

_HELP = {
    "method": "maml, fomaml, reptile, adml or aq", "dataset": "mnist5k, mnist5k-rot, digits or omniglot",
    "arch": "small-cnn, digits-net or preact-resnet18 (default: the data set's)",
    "ways": "N: classes per task", "shots": "K: support images per class", "queries": "query images per class",
    "meta_batch": "tasks per outer step", "rounds": "rounds (one metrics row each)",
    "steps_per_round": "outer steps per round",
    "budget_grad_evals": "stop meta-training once cost/grad_evals reaches this, mid-round if need be (0 = none)",
    "first_order": "maml/adml: first-order approximation (fomaml implies it)",
    "inner_lr": "inner-loop SGD step", "inner_steps": "inner-loop steps", "meta_lr": "outer Adam step",
    "eps": "attack radius in [0, 1] pixel units, a number or a fraction such as 8/255 (ADML/AQ training, validation)",
    "beta1": "ADML weight of L(theta'_clean, adversarial query)", "beta2": "ADML weight of L(theta'_adv, clean query)",
    "attack": "ADML's/AQ's training attack: fgsm (Yin et al.'s ADML) or pgd (--method aq makes it its default, "
              "as Goldblum et al.)",
    "attack_steps": "PGD steps of the ADML/AQ training attack",
    "step_ratio": "PGD step size / eps of the ADML/AQ training attack", "norm": "threat model: linf or l2",
    "eval_inner_steps": "inner steps at validation/meta-test (0 = inner_steps)",
    "val_tasks": "fixed meta-validation tasks measured each round", "val_pgd_steps": "PGD steps of the per-round check",
    "seed": "seed of initialisation, tasks and attacks", "device": "auto, cpu or cuda",
    "precision": "meta-training steps: fp32, bf16 (autocast) or auto (bf16 where native); validation stays fp32",
    "data_dir": "folder holding omniglot-py/ (omniglot) or torchvision data",
    "download": "let torchvision download missing data (needs internet)",
}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`MetaConfig` field, named like the field with dashes."""
    from ..meta import MetaConfig

    p.add_argument("--config", default=S, metavar="FILE", help="YAML or JSON file of config keys; flags override it")
    for f in dataclasses.fields(MetaConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP.get(f.name, f.name.replace('_', ' '))} (default {f.default!r})"
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", default=S, help=help_text)
        else:  # eps, in pixel units, also as a fraction such as 8/255
            kind = eps_value(flag) if f.name == "eps" else type(f.default)
            p.add_argument(flag, type=kind, default=S, help=help_text)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("meta", help="few-shot meta-learning: MAML, first-order MAML, Reptile, ADML, AQ",
                       description="Meta-train a few-shot learner (clean or adversarial), one round at a time.")
    p.add_argument("--out", required=True, help="run folder (config.json, metrics.csv, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_config_flags(p)
    add_worker_flags(p)
    e = sub.add_parser("meta-evaluate", help="600-task meta-test of a meta-learning run",
                       description="Few-shot accuracy on meta-test tasks, clean and under PGD against the adapted model.")
    e.add_argument("checkpoint", help="checkpoint.pt of a metaadv meta run, or its run folder")
    e.add_argument("--tasks", type=int, default=600, help="meta-test tasks (default 600)")
    e.add_argument("--eps", type=eps_value("--eps"), nargs="+", default=None, metavar="EPS",
                   help="attack radius, or several for a sweep, e.g. --eps 0.05 0.1 0.2 0.3 or 8/255 "
                        "(default: the run's eps)")
    e.add_argument("--pgd-steps", type=int, default=20, help="PGD steps against the adapted model (default 20)")
    e.add_argument("--pgd-restarts", type=int, default=1, help="PGD random starts per query (default 1)")
    e.add_argument("--inner-steps", type=int, default=None, help="adaptation steps (default: the run's)")
    e.add_argument("--queries", type=int, default=None, help="query images per class (default: the run's)")
    e.add_argument("--support-attack", default="none",  # checked by meta_test: one-line errors
                   help="none (default), or also perturb the support set: theta (PGD against the meta-parameters) "
                        "or unrolled (PGD through the inner loop, adaptive)")
    e.add_argument("--attack-support", action="store_true", help="the same as --support-attack theta")
    e.add_argument("--autoattack-eps", type=eps_value("--autoattack-eps"), default=None, metavar="EPS",
                   help="at this one of the --eps values, also run AutoAttack's APGD-CE, APGD-DLR, APGD-T (ways-1 "
                        "targets) against the adapted model, on the first --aa-tasks tasks")
    e.add_argument("--aa-tasks", type=int, default=100, help="tasks AutoAttack runs on (default 100)")
    e.add_argument("--square-queries", type=int, default=None, metavar="N",
                   help="after AutoAttack's set, the reference's gradient-free Square with N queries on the queries "
                        "left, in the same worst case (needs --autoattack-eps)")
    e.add_argument("--per-task", default=None, metavar="CSV", help="write one row per (task, eps) to this CSV")
    e.add_argument("--label", default=None, metavar="NAME",
                   help="name of this checkpoint in the --per-task rows and the JSON (default: its method), "
                        "to tell two variants of one method apart")
    e.add_argument("--seed", type=int, default=0, help="seed of the meta-test tasks and PGD starts (default 0)")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    e.add_argument("--data-dir", default=None, help="override the run's data folder")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(_run=run_evaluate)
    return p


def run(args: argparse.Namespace) -> int:
    from ..meta import MetaConfig, run_meta
    from ..meta.run import progress_line, read_meta_checkpoint

    spec = worker_spec(args)
    if spec is None:
        config = run_config(args, MetaConfig, read_meta_checkpoint)
    else:  # a folder whose checkpoint.pt is gone still holds Ray Train's checkpoints
        from ..distributed.train import read_stored_state

        config = run_config(args, MetaConfig, lambda path: read_stored_state(Path(path).parent, "meta"))
    warn_if_bf16_is_emulated(config.precision, config.device)
    if spec is None:
        on_row = None if args.quiet else (lambda row, r: print(progress_line(row, config.rounds), flush=True))
        run_meta(config, args.out, resume=args.resume, on_row=on_row)
    else:
        from ..distributed.train import run_distributed

        run_distributed("meta", config, args.out, spec, resume=args.resume, address=args.address, quiet=args.quiet)
    print(f"done: {args.out}/checkpoint.pt (meta-test with: metaadv meta-evaluate {args.out})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..meta import meta_test

    r = meta_test(args.checkpoint, tasks=args.tasks, eps=args.eps, pgd_steps=args.pgd_steps,
                  pgd_restarts=args.pgd_restarts, inner_steps=args.inner_steps, attack_support=args.attack_support,
                  support_attack=args.support_attack, queries=args.queries, seed=args.seed, device=args.device,
                  data_dir=args.data_dir, autoattack_eps=args.autoattack_eps, aa_tasks=args.aa_tasks,
                  per_task=args.per_task, label=args.label, square_queries=args.square_queries)
    if args.json:
        print(json.dumps(r))
        return 0
    for line in report_lines(r):
        print(line)
    return 0


def report_lines(r: dict) -> list[str]:
    """The meta-test in words: settings, clean accuracy, the sweep, where it meets chance, AutoAttack."""
    support = {"none": "clean support", "theta": "support attacked against theta",
               "unrolled": "support attacked through the inner loop"}[r["support_attack"]]
    restarts = f" x{r['pgd_restarts']} restarts" if r["pgd_restarts"] > 1 else ""
    name = r["method"] if r["label"] == r["method"] else f"{r['label']} ({r['method']})"
    lines = [f"meta-test {name} on {r['dataset']}: {r['ways']}-way {r['shots']}-shot, {r['queries']} queries/class, "
             f"{r['tasks']} tasks, {r['inner_steps']} inner steps, PGD-{r['pgd_steps']}{restarts} ({r['norm']}, {support})",
             f"clean  accuracy {100 * r['clean_acc']:.2f} +- {100 * r['clean_ci95']:.2f} %"]
    for row in r["sweep"]:
        lines.append(f"robust accuracy {100 * row['robust_acc']:.2f} +- {100 * row['robust_ci95']:.2f} %  at eps {row['eps']:g}")
    chance, up_to, first_not = r["chance"], r["above_chance_up_to"], r["first_not_above_chance"]
    if up_to is None:
        lines.append(f"chance ({100 * chance:.1f}%): robust accuracy is not above it with its 95% CI at any swept eps")
    elif first_not is None:
        lines.append(f"chance ({100 * chance:.1f}%): robust accuracy stays above it with its 95% CI at every swept eps")
    else:
        lines.append(f"chance ({100 * chance:.1f}%): robust accuracy is above it with its 95% CI up to eps {up_to:g}, "
                     f"not at eps {first_not:g}")
    if "aa_eps" in r:
        lines.append(f"AutoAttack ({', '.join(r['aa_components'])}) + PGD at eps {r['aa_eps']:g} on {r['aa_tasks']} tasks: "
                     f"{100 * r['aa_robust_acc']:.2f} +- {100 * r['aa_robust_ci95']:.2f} % "
                     f"(PGD alone on those tasks {100 * r['aa_pgd_robust_acc']:.2f} %)")
    lines.append(f"({r['seconds']:.1f}s, {r['grad_evals']} grad evals)")
    return lines
