"""The Ray Train adapter: data-parallel training across workers and nodes, around the round loops.

- :mod:`.ddp`: the ``torch.distributed`` side (DDP for the classifier, hand all-reduces for
  generators and meta-gradients), Ray-free;
- :mod:`.workers`: worker counts, resources and the device each worker trains on;
- :mod:`.train`: ``TorchTrainer`` (Ray Train V2) driving ``TrainingRun`` / ``MetaRun`` in every
  worker, checkpoints through ``ray.train.report``;
- :mod:`.storage`: refusing storage a multi-node cluster does not share;
- :mod:`.ray_session`: joining or starting the cluster (``ensure_ray``, shared with the Tune adapter).

Ray is imported only where a function needs it, so ``--workers 1`` never loads it.
"""

from .workers import WorkerSpec

__all__ = ["WorkerSpec"]
