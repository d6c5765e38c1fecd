"""Phase 3: every final model through :func:`metaadv.evaluation.evaluate_checkpoint`, as Ray tasks
(so a cluster shares the work), into ``eval/ARM/MODEL.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..tune.study_support import run_as_tasks
from .spec import Study
from .folder import StudyOptions, write_json
from .progress import Progress, duration
from .units import local_checkpoint
from .verdict import counted_robust, trust_label, verdict_of

__all__ = ["evaluate_all", "evaluate_into", "verdict_of", "trust_label", "OWN", "judge_options", "needs_square", "counted_robust",
           "surrogate_options"]

# A ``transfer`` item (``Arm.evaluation={"transfer": "own"}``; a comma list may hold it beside
# ``metaadv evaluate --transfer`` items) meaning the evaluated model's own run: a generator arm's own
# generator as a transfer attack, reported under ``transfer.own``, never in the verdict.
OWN = "own"


def _evaluate(checkpoint: str, out: str, eps: float, options: dict) -> dict:
    """The judge of a training run: :func:`metaadv.evaluation.evaluate_checkpoint` (``metaadv evaluate``)."""
    import torch

    from ..evaluation import evaluate_checkpoint

    torch.set_num_threads(1)
    path = local_checkpoint(checkpoint)
    if options.get("surrogates"):  # study models (maybe at a URI), resolved by surrogate_options
        options = {**options, "surrogates": [str(local_checkpoint(c)) for c in options["surrogates"]]}
    judged = judge_options(options, path)  # built once: a transfer attack may fit a generator
    result = evaluate_checkpoint(path.parent, eps=eps, **judged)
    if needs_square(result, options):
        # A masked model's gradient attacks say nothing of its robustness: judge it again with the
        # gradient-free Square beside them, so the analysis counts it at a measured worst case, not at 0.
        from ..evaluation.robust import DEFAULT_ATTACKS

        first = {"robust_acc": result["robust_acc"], "untrusted_reasons": result.get("untrusted_reasons")}
        result = evaluate_checkpoint(path.parent, eps=eps, **{**judged, "attacks": [*DEFAULT_ATTACKS, "square"]})
        result["square_rejudged"] = {"reason": "untrusted without a gradient-free attack", "first": first}
    write_json(Path(out), result)
    return verdict_of(result)


def needs_square(result: dict, options: dict) -> bool:
    """An untrusted verdict that no gradient-free attack took part in (Square alone, or inside the
    standard AutoAttack), from an evaluation that did not choose its attacks itself."""
    square = "square" in (result.get("per_attack") or {}) or options.get("aa_version") in ("standard", "plus")
    return result.get("trusted") is False and not square and not options.get("attacks")


def judge_options(options: dict, checkpoint: Path) -> dict:
    """``options`` for :func:`~metaadv.evaluation.evaluate_checkpoint`: a ``transfer`` string (as
    ``metaadv evaluate --transfer``, plus :data:`OWN` for ``checkpoint``'s own run) becomes the
    attacks, checked before any attack runs."""
    spec = options.get("transfer")
    if not isinstance(spec, str):
        return dict(options)
    from ..evaluation.transfer import transfer_attacks

    items = [s.strip() for s in spec.split(",") if s.strip()]
    attacks = transfer_attacks(",".join(s for s in items if s != OWN), checkpoint)
    if OWN in items:
        (attacks[OWN],) = transfer_attacks(str(checkpoint), checkpoint).values()
    return {**options, "transfer": attacks}


def _meta_evaluate(checkpoint: str, out: str, eps: float, options: dict) -> dict:
    """The judge of a meta-learning run: ``metaadv meta-evaluate`` (:mod:`.meta_judge`; ``robust_acc``
    at ``eps``, the sweep and per-task CSVs beside ``out``)."""
    import torch

    from .meta_judge import meta_test_result

    torch.set_num_threads(1)
    result = meta_test_result(local_checkpoint(checkpoint), out, eps, options)
    write_json(Path(out), result)
    return verdict_of(result)


# The judge of each run kind (Study.kind): fn(checkpoint, out, eps, options) -> verdict_of(...).
JUDGES = {"train": _evaluate, "meta": _meta_evaluate}


def evaluate_into(root: Path, models: list[dict], key: str, eps: float, options, opts: StudyOptions,
                  progress: Progress, *, none_left: str, starting, describe, judge=_evaluate, everyone=None) -> dict:
    """Evaluate each model into ``root / model[key]`` as Ray tasks, skipping those already on disk;
    returns the verdicts keyed by (arm, model). ``options`` is a dict, or ``options(model)`` one per
    model; ``judge`` evaluates one model (:data:`JUDGES`). ``starting(n)`` and ``describe(model,
    verdict)`` word the progress lines; ``none_left`` is said when every model was done before.
    ``everyone``: all the study's models (default ``models``), which a surrogate may be one of.
    A model whose verdict a ``--reuse`` donor made for the same request is copied, not judged."""
    from .reuse import Donors, check_donors, evaluation_request

    donors = Donors(check_donors(opts.reuse))
    origins = {m["_checkpoint"]: m.get("_origin", m["_checkpoint"]) for m in (everyone or models)}
    verdicts, pending, requests, reused = {}, {}, {}, 0
    for m in models:
        out = root / m[key]
        own = options(m) if callable(options) else options
        requests[(m["arm"], m["model"])] = request = evaluation_request(m, eps, own, origins)
        if not out.is_file():  # the same judgement of the same model, made in a donor study
            reused += donors.take_evaluation(request, out)
        if out.is_file():
            verdicts[(m["arm"], m["model"])] = verdict_of(json.loads(out.read_text()))
        else:
            pending[(m["arm"], m["model"])] = (m, (m["_checkpoint"], str(out), eps, own))
    if reused:
        opts.log(f"[{progress.phase}] {reused} verdict(s) reused from {', '.join(map(str, donors.folders))}", flush=True)
    if not pending:
        opts.log(f"[{progress.phase}] {none_left}", flush=True)
        return verdicts
    opts.log(f"[{progress.phase}] {starting(len(pending))}", flush=True)
    start, total, done = time.perf_counter(), len(pending), 0
    for k, v in run_as_tasks(judge, {k: args for k, (_, args) in pending.items()}):
        m = pending[k][0]
        verdicts[k] = v
        out = Path(pending[k][1][1])  # what was asked, beside the verdict: another study may reuse it
        write_json(out, {**json.loads(out.read_text()), "request": requests[k]})
        done += 1
        elapsed = time.perf_counter() - start
        opts.log(f"[{progress.phase}] {m['arm']}/{m['model']}: {describe(m, v)} | {done}/{total} models, "
                 f"{duration(elapsed)} elapsed, {progress.eta(total - done, done, elapsed)}", flush=True)
    return verdicts


def surrogate_options(options: dict, model: dict, models: list[dict]) -> dict:
    """``options`` with its ``surrogates`` (``"arm:NAME"`` items) resolved to the checkpoints of
    NAME's models trained independently of ``model``: the one on the next seed (wrapping), never
    the model itself or one of its seed. No such model: the item is dropped, and said so."""
    items = options.get("surrogates")
    if not items:
        return options
    resolved, missing = [], []
    for item in items:
        name = item.split(":", 1)[1] if item.startswith("arm:") else None
        if name is None:
            resolved.append(item)
            continue
        others = sorted((m for m in models if m["arm"] == name and m["seed"] != model["seed"] and m is not model),
                        key=lambda m: int(m["seed"]))
        if not others:
            missing.append(item)
            continue
        after = [m for m in others if int(m["seed"]) > int(model["seed"])]
        resolved.append((after or others)[0]["_checkpoint"])
    out = {**options, "surrogates": resolved}
    if missing:
        out["surrogates_missing"] = missing
    return out


def evaluate_all(study: Study, opts: StudyOptions, root: Path, models: list[dict], progress: Progress) -> dict:
    options = dict(study.sizes[opts.size].evaluation)
    eps = study.val_eps(opts.size)
    per_model = lambda m: {k: v for k, v in surrogate_options(study.evaluation(m["arm"], opts.size), m, models).items()  # noqa: E731
                           if k != "surrogates_missing"}
    return evaluate_into(root, models, "eval", eps, per_model, opts, progress,
                         none_left="every model was evaluated before",
                         starting=lambda n: f"{n} model(s) (eps {eps:g}, {options})",
                         describe=lambda m, v: f"robust {v['robust_acc']:.3f}, {trust_label(v)}",
                         judge=JUDGES[study.kind], everyone=models)
