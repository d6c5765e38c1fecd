"""metaadv: meta-adversarial training with learned and searched schedules.

Public entry points for outside tools:

- :func:`load_model` -- a trained classifier (eval mode, [0, 1] images in, logits out).
- :func:`load_dataset` -- the ``(x, y)`` tensors of a split, exactly as ``metaadv evaluate`` uses.
"""

from .checkpoint import load_model
from .data import load_dataset

__all__ = ["load_dataset", "load_model", "__version__"]
__version__ = "0.1.0"
