"""``metaadv evaluate CHECKPOINT``: clean and worst-case robust accuracy, with sanity checks.

Robust accuracy counts an example only if it is classified correctly clean and under every
attack run (FGSM, PGD with restarts, the reference AutoAttack from pyautoattack). Exit status 3
when the verdict is untrusted (a gradient-masking check failed, or AutoAttack is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ..errors import UserError
from ..evaluation import DEFAULT_N
from ._flag_types import eps_value

DESCRIPTION = """Evaluate a checkpoint (a file, or a run folder holding checkpoint.pt) on the first N
examples of its data set's test split (default N = 500, or the whole split if smaller; --n all for
the whole split). Robust accuracy is the per-example worst case over the attacks run: an example
is robust only if it is correct clean and under every attack. eps, norm and data set default to
the checkpoint's training config. PGD defaults to 40 steps x 5 restarts with step 2.5 eps / steps;
an example counts as broken if any PGD iterate fools the model. AutoAttack is the reference
implementation (pyautoattack, the eval extra): 'standard' = APGD-CE, APGD-T, FAB-T, Square (the
paper's; minutes on a CPU for 500 digits); 'plus' = all six attacks; 'rand' = APGD-CE, APGD-DLR
with expectation over 20 draws, for randomised defences; 'fast' = APGD-CE + APGD-T only (no
FAB-T, no Square). --aa-impl art runs ART's AutoAttack instead, as a second opinion (standard or
fast). A progress bar per attack, with an ETA, goes to stderr when it is a terminal.
Exit status: 0 trusted verdict; 2 bad input; 3 untrusted verdict: a gradient-masking check failed,
or AutoAttack was asked for (the default) but is not installed. The report is printed (and
written with --out) either way; a check that could not run is reported as skipped, not passed."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="robust evaluation of a checkpoint", description=DESCRIPTION)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or run folder")
    a = p.add_argument_group("attacks")
    a.add_argument("--attacks", default=None, help="comma list from fgsm,pgd,autoattack,square (default: fgsm,pgd,autoattack; "
                   "square is the reference Square attack alone, gradient-free)")
    a.add_argument("--square-queries", type=int, default=1000, help="queries per example of --attacks square (default 1000)")
    a.add_argument("--eps", type=eps_value("--eps"), default=None,
                   help="radius in [0, 1] pixel units, a number or a fraction such as 8/255 "
                        "(default: the checkpoint's)")
    a.add_argument("--norm", default=None, help="linf or l2 (default: the checkpoint's)")
    a.add_argument("--pgd-steps", type=int, default=40, help="PGD iterations per restart (default 40)")
    a.add_argument("--pgd-restarts", type=int, default=5, help="PGD random restarts (default 5)")
    a.add_argument("--pgd-step-size", type=eps_value("--pgd-step-size"), default=None,
                   help="PGD step in pixel units, a number or a fraction such as 2/255 (default 2.5 * eps / steps)")
    a.add_argument("--aa-version", default="standard",
                   help="AutoAttack: standard (APGD-CE, APGD-T, FAB-T, Square), plus, rand (randomised defences) "
                        "or fast (APGD-CE, APGD-T) (default standard)")
    a.add_argument("--aa-impl", default="pyautoattack",
                   help="pyautoattack (the reference AutoAttack, default) or art (adversarial-robustness-toolbox's, "
                        "a second opinion: versions standard, fast)")
    a.add_argument("--no-checks", action="store_true", help="skip the gradient-masking sanity checks (reported as skipped)")
    a.add_argument("--transfer", default=None, metavar="SPEC[,SPEC]",
                   help="learned attackers reported apart, never in robust accuracy: a generator run's checkpoint "
                        "(meta-generator, advgan, meta-adv), or advgan[:STEPS] to fit AdvGAN against this model")
    a.add_argument("--surrogate", default=None, metavar="CHECKPOINT[,CHECKPOINT]",
                   help="black-box transfer attacks: PGD-40 on each independently trained model, its examples shown "
                        "to this one; part of the per-example worst case")
    d = p.add_argument_group("data and device")
    d.add_argument("--n", type=_count, default=None,
                   help=f"evaluate the first N examples of the split, or all (default {DEFAULT_N}, or the whole split if smaller)")
    d.add_argument("--split", default="test", help="test (default), val or train")
    d.add_argument("--data-dir", default=None, help="folder of torchvision data sets (default: the checkpoint's)")
    d.add_argument("--batch-size", type=int, default=256, help="(default 256)")
    d.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    d.add_argument("--seed", type=int, default=0, help="seed of every random start (default 0)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    o.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON report here")
    o.add_argument("--examples", default=None, metavar="FILE.png", help="save a grid of clean/adversarial images")
    o.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown when stderr is a terminal)")
    return p


def _count(text: str) -> int | str:
    """``--n``: a positive count or ``all``; anything else is refused by :func:`evaluate_checkpoint`."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        return text  # refused with one line by evaluate_checkpoint


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


def _n_text(r: dict) -> str:
    if not r.get("n_default"):
        return f"n {r['n']}"
    return f"n {r['n']} (default; --n all for the whole split of {r['split_size']})" if r["n"] < r.get("split_size", r["n"]) \
        else f"n {r['n']} (default: the whole split)"


def _robust_line(r: dict) -> str:
    over = f"per-example worst case over {', '.join(r['per_attack'])}"
    if r["autoattack"] == "missing":
        over += "; AutoAttack MISSING (not installed)"
    elif r["autoattack"] == "not requested":
        over += "; without AutoAttack"
    if not r["trusted"]:
        return f"robust      {r['robust_acc']:.4f}   UNTRUSTED: {'; '.join(r['untrusted_reasons'])} ({over})"
    return f"robust      {r['robust_acc']:.4f}   ({over})"


def _settings(info: dict) -> str:
    shown = {k: v for k, v in info.items() if k not in ("accuracy_after", "seconds_per_component", "notes", "skipped")}
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {'+'.join(v) if isinstance(v, list) else v}"
                     for k, v in shown.items())


def format_table(r: dict) -> str:
    """The report as a few aligned lines for a terminal."""
    lines = [f"checkpoint  {r['checkpoint']}  ({r['dataset']}, {r['arch']}, {r['method']})",
             f"threat      {r['norm']} eps={r['eps']:g}, {r['split']} split, {_n_text(r)}, device {r['device']}, "
             f"{r.get('precision', 'fp32')} (trained in {r.get('training_precision', 'fp32')})",
             f"clean       {r['clean_acc']:.4f}"]
    for name, acc in r["per_attack"].items():
        info = r["attacks"][name]
        lines.append(f"{name:<11} {acc:.4f}   ({_settings(info)}; {r['seconds'].get(name, 0):.1f}s)")
        if "accuracy_after" in info:
            steps = " -> ".join(f"{c} {a:.4f} ({info['seconds_per_component'][c]:.0f}s)" for c, a in info["accuracy_after"].items())
            lines.append(f"{'':<11} after {steps}")
        for c, why in info.get("skipped", {}).items():
            lines.append(f"{'':<11} {c} skipped: {why}")
        for note in info.get("notes", []):
            lines.append(f"{'':<11} note: {note}")
    if r["autoattack"] == "missing":
        lines.append("autoattack  MISSING: asked for but not installed (pip install -e '.[eval]')")
    lines.append(_robust_line(r))
    for name, acc in r.get("transfer", {}).items():
        lines.append(f"{name:<11} {acc:.4f}   (transfer attack, not part of the verdict)")
    status = [c["status"] for c in r["checks"].values()]
    ran = [st for st in status if st != "skipped"]
    summary = f"{ran.count('passed')}/{len(ran)} passed" + (f", {status.count('skipped')} skipped" if len(ran) < len(status) else "")
    lines.append(f"checks      {summary}")
    marks = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}
    lines += [f"  {marks[c['status']]}  {name}: {c['detail']}" for name, c in r["checks"].items()]
    if "examples" in r:
        lines.append(f"examples    {r['examples']}")
    lines.append(f"verdict     {'trusted' if r['trusted'] else 'UNTRUSTED (exit status 3)'}")
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
        square_queries=args.square_queries, surrogates=args.surrogate,
        aa_impl=args.aa_impl, batch_size=args.batch_size, seed=args.seed, checks=not args.no_checks,
        progress=False if args.no_progress else None,
        transfer=transfer_attacks(args.transfer, args.checkpoint, data_dir=args.data_dir))
    if args.out:
        _write_json(result, args.out)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0 if result["trusted"] else 3
