"""The training engine: K models in one batched computation (see :mod:`genlab.engine.trainer`).

``train_models(jobs, inputs, config)`` trains the jobs together; how each group of models is
executed (packed MLPs, vmap, lockstep, threads) is chosen per workload (:mod:`genlab.engine.choose`).
"""
from genlab.engine.config import (
    PRECISIONS,
    STRATEGIES,
    Augment,
    InputGroup,
    ModelJob,
    ModelOutcome,
    TrainConfig,
    TrainOutcome,
)
from genlab.engine.evaluate import evaluate_stacked
from genlab.engine.optim import OptimizerSettings, PerModelOptimizer, StackedOptimizer
from genlab.engine.schedules import SCHEDULES, lr_multiplier
from genlab.engine.stack import StackedModels, stack_modules, stacked_forward
from genlab.engine.trainer import BatchTrainer, augment_seed, epoch_seed, recording_decisions, train_models

__all__ = [
    "Augment", "BatchTrainer", "InputGroup", "ModelJob", "ModelOutcome", "OptimizerSettings", "PRECISIONS",
    "PerModelOptimizer", "SCHEDULES", "STRATEGIES", "StackedModels", "StackedOptimizer", "TrainConfig",
    "TrainOutcome", "augment_seed", "epoch_seed", "evaluate_stacked", "lr_multiplier", "recording_decisions",
    "stack_modules",
    "stacked_forward", "train_models",
]
