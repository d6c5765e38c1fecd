"""Honest robust evaluation: per-example worst case over FGSM, PGD and AutoAttack, plus sanity checks.

- :func:`evaluate_model` -- a model and ``(x, y)`` in, the report dict out.
- :func:`evaluate_checkpoint` -- the same for a checkpoint, on its data set's test split:
  what ``metaadv evaluate`` runs.
- :mod:`.checks` -- gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019).
- :func:`autoattack` -- the reference AutoAttack (Croce & Hein 2020; ``pyautoattack``), or ART's
  as a second opinion, its output verified.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .autoattack import AA_IMPLS, AA_VERSIONS, aa_available, art_available, autoattack, pyautoattack_available
from .checks import CHECKS, run_checks, within_threat_model
from .examples import save_examples
from .robust import (ATTACK_NAMES, EvalSettings, Evaluation, evaluate_model, resolve_attacks, run_evaluation, verdict,
                     worst_case)

__all__ = ["AA_IMPLS", "AA_VERSIONS", "ATTACK_NAMES", "CHECKS", "DEFAULT_N", "EvalSettings", "Evaluation",
           "aa_available", "art_available", "autoattack", "evaluate_checkpoint", "evaluate_model",
           "pyautoattack_available", "resolve_attacks", "run_checks", "run_evaluation", "save_examples", "verdict",
           "within_threat_model", "worst_case"]

DEFAULT_N = 500
"""Examples evaluated unless told otherwise: the standard AutoAttack on 500 digits takes minutes on a CPU."""


def evaluate_checkpoint(path: str | Path, *, eps: float | None = None, norm: str | None = None, split: str = "test",
                        n: int | str | None = None, data_dir: str | None = None, device: str = "auto",
                        examples: str | Path | None = None, **options) -> dict:
    """Evaluate a checkpoint file (or run folder) on the first ``n`` examples of its data set's ``split``.

    ``n``: None = :data:`DEFAULT_N` or the whole split if smaller (the report says
    ``"n_default": true``); ``"all"`` = the whole split.

    eps, norm and the data set default to the checkpoint's training config (the target eps, not
    a ramped one). ``examples``: also save a PNG grid of worst-case adversarial examples there.
    Other options as for :func:`evaluate_model`.
    """
    from ..checkpoint import build_checkpoint_model, read_checkpoint, resolve_checkpoint_path
    from ..data import load_splits
    from ..training.trainer import resolve_device

    if n is not None and n != "all" and (not isinstance(n, int) or n < 1):
        raise UserError(f"--n must be >= 1 or 'all', got {n}")
    payload = read_checkpoint(path)
    config = payload.get("config")
    try:
        eps = float(config["eps"]) if eps is None else eps
        norm = config["norm"] if norm is None else norm
        dataset, method = config["dataset"], config["method"]
        data_dir = data_dir or config["data_dir"] or None
    except (KeyError, TypeError):
        raise UserError(f"{str(path)!r} holds no training config (eps, norm, dataset); is it a training checkpoint?") from None
    EvalSettings(eps, norm)  # refuse a bad eps or norm before loading data
    dev = resolve_device(device)
    model = build_checkpoint_model(payload).to(dev)
    x, y = load_splits(dataset, data_dir).split(split)
    split_size = len(x)
    n_default = n is None
    if n != "all":
        x, y = x[: DEFAULT_N if n is None else n], y[: DEFAULT_N if n is None else n]
    surrogates = options.pop("surrogates", None)
    if surrogates:  # transfer attacks from independently trained models: part of the worst case
        from .robust import DEFAULT_ATTACKS, resolve_attacks
        from .transfer import surrogate_attacks

        chosen, _ = resolve_attacks(options.get("attacks") or list(DEFAULT_ATTACKS), options.get("aa_impl", "pyautoattack"))
        options["attacks"] = {**chosen, **surrogate_attacks(surrogates)}
    ev = run_evaluation(model, x, y, eps=eps, norm=norm, keep=64 if examples else 0, **options)
    result = {**ev.result, "checkpoint": str(resolve_checkpoint_path(path)), "dataset": dataset, "split": split,
              "arch": payload["arch"], "method": method, "n_default": n_default, "split_size": split_size,
              "training_precision": config.get("precision", "fp32")}
    if examples:
        title = f"{dataset} eps={eps:g} ({norm}): clean / worst-case adversarial / perturbation"
        # Show examples the attacks fooled first (they are what the picture is for), in their original order.
        shown_y = y[: len(ev.x_adv)]
        fooled = ((ev.pred_clean == shown_y) & (ev.pred_adv != shown_y)).tolist()
        pick = sorted(sorted(range(len(fooled)), key=lambda i: not fooled[i])[:8])
        save_examples(examples, x[pick], ev.x_adv[pick], y[pick], ev.pred_clean[pick], ev.pred_adv[pick],
                      norm=norm, title=title)
        result["examples"] = str(examples)
    return result
