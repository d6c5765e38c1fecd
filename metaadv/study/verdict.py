"""What the study keeps of a verdict, and how the tables count it (shared by the phases and the summary)."""

from __future__ import annotations

__all__ = ["verdict_of", "trust_label", "counted_robust"]


def verdict_of(result: dict) -> dict:
    """What the study keeps of an evaluation: the accuracies and the trust verdict. ``trusted`` is
    True or False as ``metaadv evaluate`` said, or None when its JSON has no ``trusted`` key (an
    evaluation from before the trust checks: trust unknown, not trusted)."""
    trusted = result.get("trusted")
    aa = ((result.get("attacks") or {}).get("autoattack") or {}).get("version", result.get("aa_version"))
    return {"robust_acc": result["robust_acc"], "clean_acc": result["clean_acc"],
            "trusted": None if trusted is None else bool(trusted),
            "untrusted_reasons": list(result.get("untrusted_reasons") or []),
            # whether a gradient-free attack took part (Square alone, or inside the standard AutoAttack)
            "square": "square" in (result.get("per_attack") or {}) or aa in ("standard", "plus")}


def counted_robust(verdict: dict) -> float:
    """Robust accuracy as the tables count it: an untrusted verdict at its worst case, the measured
    value when a gradient-free attack took part, else 0 (its gradient attacks say nothing)."""
    if verdict.get("trusted") is False and not verdict.get("square"):
        return 0.0
    return float(verdict["robust_acc"])


def trust_label(verdict: dict) -> str:
    if verdict["trusted"] is False:
        return "UNTRUSTED" + (f" ({'; '.join(verdict['untrusted_reasons'])})" if verdict["untrusted_reasons"] else "")
    return "trust unknown" if verdict["trusted"] is None else "trusted"
