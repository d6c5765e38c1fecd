"""The issue's reference loop, written plainly outside metaadv's trainer, to compare the default with.

A plain PGD-10 adversarial training loop (the seed CNN, Adam 1e-3, batch 100, PGD-10 with a
random start and step 0.25 eps, eps ramped linearly per batch from 0 to 0.3 over the first 3
epochs, 10 epochs), then clean and PGD-40 accuracy on the 1,000 mnist5k test digits, with PGD-40
at two step sizes: 0.01 (the common MNIST setting) and 2.5 eps / 40 (``metaadv evaluate``'s
default, stronger). It shares only the model, the data split and the PGD function with metaadv,
so a gap between it and ``metaadv train`` points at the trainer.

    python benchmarks/reference_pgd_loop.py [--train-on 4000|3500] [--seed 0] [--mnist-stats]

``--train-on 4000`` trains on all 4,000 training digits, as the issue's loop did; 3500 leaves out
the 500 that metaadv holds out for validation. The model normalises with (0.5, 0.5), as metaadv
does for MNIST; ``--mnist-stats`` uses the digits' own (0.1307, 0.3081) instead, which measured
about 5 points less robust (metaadv/data/registry.py).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from metaadv.attacks import pgd
from metaadv.data import load_splits
from metaadv.models import SmallCNN


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-on", type=int, choices=(4000, 3500), default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--mnist-stats", action="store_true", help="normalise with (0.1307, 0.3081) instead of (0.5, 0.5)")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    s = load_splits("mnist5k")
    x, y = (torch.cat([s.train_x, s.val_x]), torch.cat([s.train_y, s.val_y])) if args.train_on == 4000 else (s.train_x, s.train_y)
    model = SmallCNN(mean=(0.1307,), std=(0.3081,)) if args.mnist_stats else SmallCNN(mean=(0.5,), std=(0.5,))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    steps_per_epoch = len(x) // 100
    ramp_steps, it, start = 3 * steps_per_epoch, 0, time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x))
        for b in range(steps_per_epoch):
            idx = perm[b * 100:(b + 1) * 100]
            eps = 0.3 * min(1.0, (it + 1) / ramp_steps)
            it += 1
            x_adv = pgd(model, x[idx], y[idx], eps=eps, step_size=0.25 * eps, steps=10)
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(x_adv), y[idx]).backward()
            opt.step()
        print(f"epoch {epoch + 1}/{args.epochs}  {time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    with torch.no_grad():
        clean = (model(s.test_x).argmax(1) == s.test_y).float().mean().item()
    g = torch.Generator().manual_seed(0)
    for step, label in ((0.01, "0.01"), (2.5 * 0.3 / 40, "2.5 eps / 40")):
        x_adv = pgd(model, s.test_x, s.test_y, eps=0.3, step_size=step, steps=40, generator=g)
        with torch.no_grad():
            robust = (model(x_adv).argmax(1) == s.test_y).float().mean().item()
        print(f"train on {args.train_on}, seed {args.seed}: clean {100 * clean:.1f}%  PGD-40 (step {label}) {100 * robust:.1f}%")


if __name__ == "__main__":
    main()
