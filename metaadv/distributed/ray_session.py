"""Joining or starting the Ray cluster a run uses: one function for both adapters.

``metaadv tune`` / ``metaadv study`` (:mod:`metaadv.tune.runner`) and ``--workers N``
(:mod:`metaadv.distributed.train`) connect the same way; living here, below both, it ties
neither adapter to the other. Ray is imported when the function runs, not with the module.
"""

from __future__ import annotations

from ..errors import UserError

__all__ = ["ensure_ray"]


def ensure_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray sized to this machine (or to ``num_cpus``); True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    else:
        ray.init(include_dashboard=False, num_cpus=num_cpus)
    return True
