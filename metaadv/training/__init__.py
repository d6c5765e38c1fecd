"""Training: per-method steps, the trainer, controllers, and the round loop."""

from .controllers import CONTROLLERS, Controller, ScheduleController, build_controller, register_controller
from .hparams import HPARAM_NAMES, HParams
from .trainer import DivergedError, Trainer
from . import advgan, generator_methods, las, policy, replay  # noqa: F401  (register meta-generator, advgan, meta-adv; the las, policy and replay controllers)

__all__ = ["CONTROLLERS", "Controller", "DivergedError", "HPARAM_NAMES", "HParams", "ScheduleController", "Trainer",
           "build_controller", "register_controller"]
