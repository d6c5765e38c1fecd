"""Progress while a study runs (one line per finished trial and experiment, an ETA from the time
per trial so far) and the summary printed at its end."""

from __future__ import annotations

import time

from .spec import Study

__all__ = ["Progress", "duration", "summary_lines"]


class Progress:
    def __init__(self, log, total_trials: int):
        self.log, self.total, self.done, self.ran = log, total_trials, 0, 0
        self.start = time.perf_counter()
        self.phase = ""
        self.phases: dict[str, float] = {}  # seconds per phase
        self._phase_start = self.start

    def begin(self, phase: str) -> None:
        """End the current phase (its seconds go to ``phases``) and start ``phase`` ("" for none)."""
        now = time.perf_counter()
        if self.phase:
            self.phases[self.phase] = self.phases.get(self.phase, 0.0) + now - self._phase_start
        self.phase, self._phase_start = phase, now

    def eta(self, remaining: int, done: int, seconds: float) -> str:
        if done <= 0:
            return "ETA unknown"
        return f"ETA {duration(seconds / done * remaining)}"

    def trial(self, label: str, finished: int, of: int) -> None:
        self.done += 1
        self.ran += 1
        elapsed = time.perf_counter() - self.start
        self.log(f"[{self.phase}] {label}: {finished}/{of} trials | study {self.done}/{self.total} trials, "
                 f"{duration(elapsed)} elapsed, {self.eta(self.total - self.done, self.ran, elapsed)}", flush=True)

    def skip(self, trials: int) -> None:
        self.done += trials


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def summary_lines(study: Study, size: str, summary: dict) -> list[str]:
    """The printed summary. A model whose verdict is untrusted (``"trusted": false``: a
    gradient-masking check failed, or AutoAttack was missing) is never dropped: it counts at its
    worst case (:func:`~metaadv.study.evaluate.counted_robust`: measured if Square took part, else 0),
    is flagged, and its arm never leads. A verdict without the key is counted, and said to be of unknown trust."""
    from .verdict import counted_robust

    s = study.sizes[size]
    phases = ", ".join(f"{k} {duration(v)}" for k, v in summary.get("phases", {}).items())
    lines = [f"study {study.name} ({size}) done in {duration(summary['seconds'])}" + (f" ({phases})" if phases else "")
             + f": {summary['folder']}",
             f"  cuts: {s.corners or 'none'}",
             f"  per-model budget (cost a): {s.budget_grad_evals:,} grad evals; evaluated at eps {study.val_eps(size):g} "
             + (f"on {s.evaluation.get('n') or 'all'} test digits, AutoAttack {s.evaluation.get('aa_version')}"
                if study.kind == "train" else f"({study.kind}: {s.evaluation.get('tasks', 600)} meta-test tasks, "
                f"robust at this eps of the sweep; per-arm budgets in study.json)"),
             f"  {'arm':<18}{'models':>7}{'robust':>9}{'clean':>8}{'untrusted':>11}   (mean over every model, an untrusted "
             "one at its worst case; worst case over attacks)"]
    leader, unknown = None, 0
    for arm in study.arms:
        got = [summary["verdicts"][(m["arm"], m["model"])] for m in summary["models"] if m["arm"] == arm.name
               and (m["arm"], m["model"]) in summary["verdicts"]]
        bad = sum(g.get("trusted") is False for g in got)
        unknown += sum(g.get("trusted") is None for g in got)
        if not got:
            lines.append(f"  {arm.name:<18}{0:>7}")
            continue
        robust = sum(counted_robust(g) for g in got) / len(got)
        clean = sum(g["clean_acc"] for g in got) / len(got)
        flag = "   UNTRUSTED verdicts counted at their worst case; this arm cannot lead" if bad else ""
        lines.append(f"  {arm.name:<18}{len(got):>7}{robust:>9.3f}{clean:>8.3f}{bad:>11}{flag}")
        if not bad and (leader is None or robust > leader[1]):
            leader = (arm.name, robust)
    if leader:
        lines.append(f"  highest mean robust accuracy among arms with no untrusted verdict: {leader[0]} ({leader[1]:.3f}); "
                     "no CI at this line" + (f"; {unknown} verdict(s) of unknown trust (no 'trusted' key)" if unknown else ""))
    else:
        lines.append("  no arm leads: every arm has an untrusted verdict or no model")
    judged = summary.get("judged") or {}
    if judged:
        lines.append(f"  each arm's best model judged again ({', '.join(f'{k} {v}' for k, v in s.judge.items())}):")
        for (arm, model), v in judged.items():
            first = summary["verdicts"][(arm, model)]["robust_acc"]
            lines.append(f"    {arm + '/' + model:<26} robust {v['robust_acc']:.3f} (evaluation above: {first:.3f}), "
                         f"{'UNTRUSTED' if v.get('trusted') is False else 'trusted' if v.get('trusted') else 'trust unknown'}")
    lines.append("  next: metaadv analyze " + summary["folder"] + " --out REPORT_DIR  (CIs, paired contrasts, cost (b))")
    return lines
