"""``metaadv evaluate CHECKPOINT``: clean and worst-case robust accuracy, with sanity checks.

Robust accuracy counts an example only if it is classified correctly clean and under every
attack run (FGSM, PGD with restarts, AutoAttack from adversarial-robustness-toolbox).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ..errors import UserError

DESCRIPTION = """Evaluate a checkpoint (a file, or a run folder holding checkpoint.pt) on its data set's
test split. Robust accuracy is the per-example worst case over the attacks run: an example is
robust only if it is correct clean and under every attack. eps, norm and data set default to the
checkpoint's training config. PGD defaults to 40 steps x 5 restarts with step 2.5 eps / steps.
AutoAttack (ART) 'standard' = APGD-CE, APGD-DLR, DeepFool, Square (slow on a CPU); 'fast' =
APGD-CE + APGD-DLR only. Failed gradient-masking checks print warnings; they do not change the
exit status."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="robust evaluation of a checkpoint", description=DESCRIPTION)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or run folder")
    a = p.add_argument_group("attacks")
    a.add_argument("--attacks", default=None, help="comma list from fgsm,pgd,autoattack (default: all available)")
    a.add_argument("--eps", type=float, default=None, help="radius in [0, 1] pixel units (default: the checkpoint's)")
    a.add_argument("--norm", default=None, help="linf or l2 (default: the checkpoint's)")
    a.add_argument("--pgd-steps", type=int, default=40, help="PGD iterations per restart (default 40)")
    a.add_argument("--pgd-restarts", type=int, default=5, help="PGD random restarts (default 5)")
    a.add_argument("--pgd-step-size", type=float, default=None, help="PGD step (default 2.5 * eps / steps)")
    a.add_argument("--aa-version", default="standard",
                   help="AutoAttack: standard (APGD-CE, APGD-DLR, DeepFool, Square) or fast (APGD-CE, APGD-DLR) (default standard)")
    a.add_argument("--no-checks", action="store_true", help="skip the gradient-masking sanity checks")
    a.add_argument("--transfer", default=None, metavar="SPEC[,SPEC]",
                   help="learned attackers reported apart, never in robust accuracy: a generator run's checkpoint "
                        "(meta-generator, advgan, meta-adv), or advgan[:STEPS] to fit AdvGAN against this model")
    d = p.add_argument_group("data and device")
    d.add_argument("--n", type=int, default=None, help="evaluate the first N examples of the split (default: all)")
    d.add_argument("--split", default="test", help="test (default), val or train")
    d.add_argument("--data-dir", default=None, help="folder of torchvision data sets (default: the checkpoint's)")
    d.add_argument("--batch-size", type=int, default=256, help="(default 256)")
    d.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    d.add_argument("--seed", type=int, default=0, help="seed of every random start (default 0)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    o.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON report here")
    o.add_argument("--examples", default=None, metavar="FILE.png", help="save a grid of clean/adversarial images")
    return p


def _write_json(result: dict, path: str) -> None:
    """Through a temporary file and a rename: never half a report on disk."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def format_table(r: dict) -> str:
    """The report as a few aligned lines for a terminal."""
    lines = [f"checkpoint  {r['checkpoint']}  ({r['dataset']}, {r['arch']}, {r['method']})",
             f"threat      {r['norm']} eps={r['eps']:g}, {r['n']} {r['split']} examples, device {r['device']}",
             f"clean       {r['clean_acc']:.4f}"]
    for name, acc in r["per_attack"].items():
        settings = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["attacks"][name].items())
        lines.append(f"{name:<11} {acc:.4f}   ({settings}; {r['seconds'].get(name, 0):.1f}s)")
    lines.append(f"robust      {r['robust_acc']:.4f}   (per-example worst case over {', '.join(r['per_attack'])})")
    for name, acc in r.get("transfer", {}).items():
        lines.append(f"{name:<11} {acc:.4f}   (transfer attack, not part of the verdict)")
    if r["checks"]:
        passed = sum(c["passed"] for c in r["checks"].values())
        lines.append(f"checks      {passed}/{len(r['checks'])} passed")
        lines += [f"  {'ok  ' if c['passed'] else 'FAIL'}  {name}: {c['detail']}" for name, c in r["checks"].items()]
    if "examples" in r:
        lines.append(f"examples    {r['examples']}")
    lines.append(f"seconds     {r['seconds']['total']:.1f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_checkpoint
    from ..evaluation.transfer import transfer_attacks

    for flag in ("out", "examples"):
        value = getattr(args, flag)
        if value and Path(value).is_dir():
            raise UserError(f"--{flag} {value!r} is a folder; give a file name")
    result = evaluate_checkpoint(
        args.checkpoint, eps=args.eps, norm=args.norm, split=args.split, n=args.n, data_dir=args.data_dir,
        device=args.device, examples=args.examples, attacks=args.attacks, pgd_steps=args.pgd_steps,
        pgd_restarts=args.pgd_restarts, pgd_step_size=args.pgd_step_size, aa_version=args.aa_version,
        batch_size=args.batch_size, seed=args.seed, checks=not args.no_checks,
        transfer=transfer_attacks(args.transfer, args.checkpoint, data_dir=args.data_dir))
    if args.out:
        _write_json(result, args.out)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
