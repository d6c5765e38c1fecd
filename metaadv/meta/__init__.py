"""Few-shot meta-learning, clean and adversarial: MAML, first-order MAML, Reptile, ADML, AQ.

- Finn et al. 2017, "Model-Agnostic Meta-Learning", arXiv:1703.03400 (MAML, first-order MAML).
- Nichol et al. 2018, "On First-Order Meta-Learning Algorithms", arXiv:1803.02999 (Reptile).
- Yin et al. 2018, "Adversarial Meta-Learning", arXiv:1806.03316 (ADML).
- Goldblum, Fowl, Goldstein 2020, "Adversarially Robust Few-Shot Learning: A Meta-Learning Approach",
  NeurIPS 2020, arXiv:1910.00982 (Adversarial Querying, AQ).

Data flows as elsewhere in metaadv: class pools -> tasks -> inner loop -> outer step -> one
metrics row per round (``metaadv meta``); ``metaadv meta-evaluate`` runs the 600-task meta-test.
"""

from .algorithms import METHOD_STEPS, MetaContext, TaskOutput
from .config import META_DATASETS, META_METHODS, MetaConfig, MetaHParams
from .data import CLASS_SPLITS, MetaData, load_meta_data
from .evaluate import FewShotResult, evaluate_task, evaluate_tasks, mean_ci95
from .inner import FunctionalModel, adapt, forward, make_transductive, meta_parameters
from .learner import MetaLearner, build_meta_model
from .metatest import meta_test
from .omniglot import load_omniglot
from .run import MetaRun, read_meta_checkpoint, run_meta
from .tasks import ClassPool, Task

__all__ = [
    "CLASS_SPLITS", "ClassPool", "FewShotResult", "FunctionalModel", "META_DATASETS", "META_METHODS",
    "METHOD_STEPS", "MetaConfig", "MetaContext", "MetaData", "MetaHParams", "MetaLearner", "MetaRun", "Task",
    "TaskOutput", "adapt", "build_meta_model", "evaluate_task", "evaluate_tasks", "forward", "load_meta_data",
    "load_omniglot", "make_transductive", "mean_ci95", "meta_parameters", "meta_test", "read_meta_checkpoint",
    "run_meta",
]
