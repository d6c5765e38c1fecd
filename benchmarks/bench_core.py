"""Core benchmark: what adversarial training costs relative to clean training, and attack speed.

Prints, measured in one run on mnist5k with the seed CNN:
- PGD-k AT round time / clean round time for k = 1, 5, 10, next to the naive limit k + 1 and the
  target 0.8 (k + 1). The attack needs no parameter gradients, so an attack step is cheaper than
  a training step and the ratio should sit well under k + 1. Rounds of the four settings are
  interleaved and timed in CPU seconds of this process (benchmarks/_timing.py), so a shared
  machine's load cancels out of the ratios.
- bf16 / fp32 round time for clean, PGD-1 and PGD-10 rounds under ``--precision bf16`` (autocast
  around the model's forward in attack and training steps), with the CPU's vector flags and
  whether bf16 is native there (a CUDA device with bf16; a CPU with AVX512-BF16 or AMX); target
  for PGD-10 where it is native: at most 0.6. Where it is emulated the ratio is what an explicit
  ``--precision bf16`` costs (10.6 for PGD-10 on an AVX2-only CPU).
- images/s of FGSM and PGD-10 (eval-mode attacks, batch 100; wall time).
"""

from __future__ import annotations

import argparse
import time

import torch

from metaadv.attacks import fgsm, pgd
from metaadv.config import TrainConfig
from metaadv.data import load_splits
from metaadv.training.precision import cpu_vector_flags, native_bf16
from metaadv.training.trainer import Trainer

from _timing import add_round_args, header, interleaved_round_seconds  # benchmarks/_timing.py


def make_trainer(splits, method: str, steps: int, steps_per_round: int, device: str, precision: str = "fp32"):
    config = TrainConfig.from_dict({"method": method, "steps": steps, "steps_per_round": steps_per_round,
                                    "eps_ramp_rounds": 0, "device": device, "precision": precision})
    trainer = Trainer(config, splits, torch.device(device))
    hp = config.hparams()
    trainer.train_round(hp)  # warm-up: allocator, kernels
    return trainer, hp


def images_per_second(attack, model, x, y, repeats: int) -> float:
    attack(model, x, y)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        attack(model, x, y)
    sync()
    return repeats * len(x) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_args(p)
    args = p.parse_args()
    splits = load_splits("mnist5k")
    print(header(args))
    settings = {"clean": ("standard", 1, "fp32"), **{f"PGD-{k}": ("pgd-at", k, "fp32") for k in (1, 5, 10)}}
    native = native_bf16(torch.device(args.device))
    # Interleaved with the fp32 rounds, so the bf16/fp32 ratios come from one run too.
    settings.update({f"{name} bf16": (method, k, "bf16") for name, (method, k, _) in settings.items() if name != "PGD-5"})
    trainers = {name: make_trainer(splits, method, k, args.steps_per_round, args.device, prec)
                for name, (method, k, prec) in settings.items()}
    measured = interleaved_round_seconds(trainers, args.rounds, args.device)
    clean = measured["clean"][0]
    print(f"clean round: {clean:.3f} s")
    print(f"{'k':>3} {'PGD-k round s':>14} {'ratio':>7} {'naive k+1':>10} {'target 0.8(k+1)':>16}  verdict")
    for k in (1, 5, 10):
        t = measured[f"PGD-{k}"][0]
        ratio = t / clean
        verdict = "ok" if ratio <= 0.8 * (k + 1) else "over target"
        print(f"{k:>3} {t:>14.3f} {ratio:>7.2f} {k + 1:>10} {0.8 * (k + 1):>16.1f}  {verdict}")
    where = f"cpu flags: {cpu_vector_flags()}" if args.device == "cpu" else args.device
    print(f"bf16 is {'native' if native else 'emulated'} here ({where})")
    target = "(target for PGD-10: <= 0.6)" if native else "(emulated: what an explicit --precision bf16 costs)"
    print(f"{'round':>7} {'fp32 s':>8} {'bf16 s':>8} {'bf16/fp32':>10}  {target}")
    for name in ("clean", "PGD-1", "PGD-10"):
        fp, bf = measured[name][0], measured[f"{name} bf16"][0]
        verdict = ("  ok" if bf / fp <= 0.6 else "  over target") if name == "PGD-10" and native else ""
        print(f"{name:>7} {fp:>8.3f} {bf:>8.3f} {bf / fp:>10.2f}{verdict}")

    torch.manual_seed(0)
    trainer = Trainer(TrainConfig(), splits, torch.device(args.device))
    model = trainer.model.eval()
    x, y = trainer.val_x[:100], trainer.val_y[:100]
    g = torch.Generator(device=args.device).manual_seed(0)
    fg = images_per_second(lambda m, a, b: fgsm(m, a, b, eps=0.3), model, x, y, 20)
    pg = images_per_second(lambda m, a, b: pgd(m, a, b, eps=0.3, step_size=0.075, steps=10, generator=g), model, x, y, 5)
    print(f"FGSM: {fg:,.0f} images/s   PGD-10: {pg:,.0f} images/s   (FGSM / PGD-10 = {fg / pg:.1f}, naive 10)")


if __name__ == "__main__":
    main()
