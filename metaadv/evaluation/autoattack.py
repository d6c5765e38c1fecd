"""AutoAttack (Croce & Hein, 2020, arXiv:2003.01690): the reference implementation is the judge.

``pyautoattack`` is fra31/auto-attack packaged for PyPI (what RobustBench depends on); it is the
``eval`` extra's AutoAttack and ``metaadv evaluate``'s default. It is imported only when
AutoAttack runs. ART's AutoAttack stays available as a second opinion (``--aa-impl art``,
:mod:`.autoattack_art`).

Versions (``aa_version``), the reference's own settings:

- ``standard``: APGD-CE (100 iterations, 1 restart), APGD-T (targeted DLR loss, 9 target
  classes), FAB-T (9 target classes) and Square (5,000 queries): the paper's and RobustBench's
  AutoAttack. FAB-T and Square dominate the cost on a CPU.
- ``plus``: APGD-CE, APGD-DLR (5 restarts each), FAB, Square, APGD-T, FAB-T: slower, stronger.
- ``rand``: APGD-CE and APGD-DLR with expectation over 20 draws per step, for randomised defences.
- ``fast``: APGD-CE and APGD-T with the standard version's settings, i.e. the standard
  version's first two attacks (no FAB-T, no Square: no gradient-free component). Several times
  cheaper; on MNIST models FAB-T and Square rarely break what APGD-T left.

Each component attacks only the examples every earlier one left unbroken, as in the
reference. Here a component runs on chunks of the remaining examples so that progress can be
shown; the reference reseeds every call with ``seed``, so a chunk is attacked exactly as one of
its own batches would be. The targeted DLR loss reads the four largest logits: with fewer than 4
classes APGD-T is skipped (and APGD-DLR with fewer than 3), and the report says so. Examples
returned are verified, not trusted: outside the eps-ball or [0, 1] counts as not fooled.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from ..attacks import frozen_eval
from ..errors import UserError
from .autoattack_art import ART_VERSIONS, art_autoattack, art_available
from .checks import keep_in_threat_model

__all__ = ["AA_IMPLS", "AA_VERSIONS", "COMPONENTS", "INSTALL_HINT", "ReferenceAutoAttack", "aa_available",
           "aa_versions", "autoattack", "pyautoattack_available", "square_attack"]

AA_IMPLS = ("pyautoattack", "art")
AA_VERSIONS = ("standard", "plus", "rand", "fast")
INSTALL_HINT = "install the eval extra: pip install -e '.[eval]'"
COMPONENTS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "fast": ("apgd-ce", "apgd-t"),
}
MIN_CLASSES = {"apgd-t": 4, "apgd-dlr": 3}  # DLR reads the 3 (targeted: 4) largest logits
_PACKAGES = {"pyautoattack": "pyautoattack", "art": "adversarial-robustness-toolbox"}


def pyautoattack_available() -> bool:
    return importlib.util.find_spec("pyautoattack") is not None


def aa_available(impl: str = "pyautoattack") -> bool:
    """True when the AutoAttack implementation ``impl`` can be imported."""
    return pyautoattack_available() if impl == "pyautoattack" else art_available()


def aa_versions(impl: str) -> tuple[str, ...]:
    return AA_VERSIONS if impl == "pyautoattack" else ART_VERSIONS


def check_aa(impl: str, version: str) -> None:
    """Refuse an unknown implementation or a version it does not have (a :class:`UserError`)."""
    if impl not in AA_IMPLS:
        raise UserError(f"unknown AutoAttack implementation {impl!r}; choose one of {', '.join(AA_IMPLS)}")
    if version not in aa_versions(impl):
        raise UserError(f"unknown AutoAttack version {version!r} for --aa-impl {impl}; "
                        f"choose one of {', '.join(aa_versions(impl))}")


def package_version(impl: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{_PACKAGES[impl]} {version(_PACKAGES[impl])}"
    except PackageNotFoundError:
        return _PACKAGES[impl]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


class ReferenceAutoAttack:
    """The reference AutoAttack for ``model``, run one component at a time.

    ``components``: the names to run in order; ``skipped``: name -> why not (too few classes);
    ``notes``: the reference's own warnings (a randomised or dynamic defence, probabilities
    for logits), each once. ``run(name, x, y) -> x_adv`` attacks a chunk with one component.
    """

    def __init__(self, model: torch.nn.Module, *, eps: float, norm: str, version: str, seed: int,
                 num_classes: int, device: torch.device | str, components: tuple[str, ...] | None = None):
        check_aa("pyautoattack", version)
        if not pyautoattack_available():
            raise UserError(f"AutoAttack needs pyautoattack; {INSTALL_HINT}")
        from pyautoattack import AutoAttack

        self.model, self.notes = model, []
        # ``components``: a custom set with the standard version's settings (the few-shot meta-test's
        # APGD-CE, APGD-DLR, APGD-T); ``fast`` is the custom set (APGD-CE, APGD-T).
        custom = components is not None or version == "fast"
        attacks = list(components or COMPONENTS["fast"]) if custom else None
        aa = AutoAttack(model, attacks=attacks, device=str(device), eps=eps,
                        norm={"linf": "Linf", "l2": "L2"}[norm], seed=seed, version="custom" if custom else version)
        if custom:  # the standard version's settings (custom keeps the constructor's 5 restarts)
            aa.apgd.n_restarts, aa.apgd_targeted.n_restarts, aa.apgd_targeted.n_target_classes = 1, 1, 9
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, num_classes - 1)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, num_classes - 1)
        self.aa = aa
        self.components = [c for c in aa.attacks_to_run if num_classes >= MIN_CLASSES.get(c, 2)]
        self.skipped = {c: f"needs >= {MIN_CLASSES[c]} classes, the model has {num_classes}"
                        for c in aa.attacks_to_run if c not in self.components}

    def run(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.aa.attacks_to_run = [name]
        with self._quiet(), frozen_eval(self.model), torch.random.fork_rng(devices=_cuda(x)):
            x_adv, _ = self.aa.run_standard_evaluation(x, y, batch_size=len(x))
        return x_adv.detach().to(device=x.device, dtype=x.dtype)

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """The reference logs its warnings once per call; collect them, so each is reported once."""
        log = logging.getLogger("auto-attack")
        handler, propagate = _Collect(), log.propagate
        log.addHandler(handler)
        log.propagate = False
        try:
            yield
        finally:
            log.removeHandler(handler)
            log.propagate = propagate
            for msg in handler.messages:
                if msg not in self.notes:
                    self.notes.append(msg)
                    warnings.warn(f"pyautoattack: {msg}", stacklevel=4)


def _cuda(x: torch.Tensor) -> list:
    return [x.device] if x.device.type == "cuda" else []


def square_attack(model: torch.nn.Module, x_example: torch.Tensor, *, eps: float, norm: str, queries: int,
                  seed: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The reference Square attack alone (Andriushchenko et al. 2020, arXiv:1912.00049), with
    ``queries`` model queries per example: ``attack(x, y) -> x_adv``. Gradient-free, so gradient
    masking cannot hide a model from it (EVAL_FACTS: ``aa.square.n_queries`` before the run)."""
    ref = ReferenceAutoAttack(model, eps=eps, norm=norm, version="standard", seed=seed,
                              num_classes=num_classes_of(model, x_example), device=x_example.device,
                              components=("square",))
    ref.aa.square.n_queries = queries
    return lambda x, y: ref.run("square", x, y)


def num_classes_of(model: torch.nn.Module, x_example: torch.Tensor) -> int:
    with torch.no_grad(), frozen_eval(model):
        return int(model(x_example[:1]).shape[1])


def autoattack_stages(model, x_example: torch.Tensor, *, eps: float, norm: str, version: str, impl: str, seed: int,
                      batch_size: int) -> tuple[list[tuple[str, Callable]], dict]:
    """``([(stage name, attack(x, y) -> x_adv)], description)`` for the evaluation loop."""
    check_aa(impl, version)
    if impl == "art":
        from .autoattack_art import make_art_autoattack, seed_everything

        seed_everything(seed)  # ART draws from the global generators
        run = make_art_autoattack(model, x_example, eps=eps, norm=norm, version=version, batch_size=batch_size)
        return [("autoattack", run)], {"version": version, "implementation": package_version("art")}
    ref = ReferenceAutoAttack(model, eps=eps, norm=norm, version=version, seed=seed,
                              num_classes=num_classes_of(model, x_example), device=x_example.device)
    stages = [(c, (lambda name: lambda x, y: ref.run(name, x, y))(c)) for c in ref.components]
    info = {"version": version, "implementation": package_version("pyautoattack"), "components": list(ref.components),
            "notes": ref.notes}
    if ref.skipped:
        info["skipped"] = ref.skipped
    return stages, info


def autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               version: str = "standard", batch_size: int = 256, seed: int = 0, impl: str = "pyautoattack") -> torch.Tensor:
    """AutoAttack ``x`` ``(B, C, H, W)`` in [0, 1] with true labels ``y``; verified, detached ``x_adv``.

    ``impl``: ``pyautoattack`` (the reference, default) or ``art``. An example keeps the output
    of the first component that fools the model; the others come back as the last one left them.
    """
    check_aa(impl, version)
    if impl == "art":
        return art_autoattack(model, x, y, eps=eps, norm=norm, version=version, batch_size=batch_size, seed=seed)
    stages, _ = autoattack_stages(model, x, eps=eps, norm=norm, version=version, impl=impl, seed=seed,
                                  batch_size=batch_size)
    x_adv, todo = x.detach().clone(), torch.ones(len(x), dtype=torch.bool, device=x.device)
    for name, run in stages:
        for start in range(0, len(x), batch_size):
            b = todo[start:start + batch_size].nonzero().flatten() + start
            if not len(b):
                continue
            xa = keep_in_threat_model(x[b], run(x[b], y[b]), eps, norm, name)
            with torch.no_grad(), frozen_eval(model):
                fooled = model(xa).argmax(1) != y[b]
            x_adv[b[fooled]] = xa[fooled]
            todo[b[fooled]] = False
    return x_adv.detach()
