"""The training engine: K models in one batched computation (see :mod:`genlab.engine.trainer`)."""
from genlab.engine.optim import OptimizerSettings, StackedOptimizer
from genlab.engine.schedules import SCHEDULES, lr_multiplier
from genlab.engine.stack import StackedModels, stack_modules, stacked_forward
from genlab.engine.trainer import (
    Augment,
    BatchTrainer,
    InputGroup,
    ModelJob,
    ModelOutcome,
    TrainConfig,
    TrainOutcome,
    augment_seed,
    epoch_seed,
    evaluate_stacked,
    train_models,
)

__all__ = [
    "Augment", "BatchTrainer", "InputGroup", "ModelJob", "ModelOutcome", "OptimizerSettings", "SCHEDULES",
    "StackedModels", "StackedOptimizer", "TrainConfig", "TrainOutcome", "augment_seed", "epoch_seed",
    "evaluate_stacked", "lr_multiplier", "stack_modules", "stacked_forward", "train_models",
]
