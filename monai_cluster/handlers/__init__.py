"""Ignite handlers and metrics: the checkpointer, pseudo-class re-clustering, the non-finite-loss stop, the
shape-prior discriminator step, the local-discrimination warm-up, the EMA teacher of semi-supervised fine-tuning,
a budget in steps and evaluations at chosen steps, loss logging (pretraining progress, loss components), the
segmentation evaluator's metrics JSON and output files, and the ``BestClusterDice`` metric."""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    TrainingCheckpointer,
    checkpoint_path,
    find_last_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .ema_teacher import EMATeacherHandler, ema_decay, make_teacher, unwrap_network
from .ld_warmup import LocalDiscriminationWarmupHandler
from .loss_components import LossComponentsLogger, OutputScalars
from .metrics import BestClusterDice
from .non_finite_loss import NonFiniteLossHandler
from .pretrain_progress import PretrainProgress
from .pseudo_class_update import PseudoClassUpdateHandler, count_changed
from .segmentation_outputs import (
    SegmentationMetricsWriter,
    SegmentationOutputWriter,
    add_source_paths,
    summarize_metric,
)
from .shape_prior import ShapePriorHandler, assignment_from_output
from .step_budget import (
    PeriodicEvaluationHandler,
    StepBudgetHandler,
    average_summaries,
    budget_epochs,
    evaluation_steps,
)

__all__ = [
    "BestClusterDice",
    "CHECKPOINT_FORMAT",
    "EMATeacherHandler",
    "LocalDiscriminationWarmupHandler",
    "LossComponentsLogger",
    "NonFiniteLossHandler",
    "OutputScalars",
    "PeriodicEvaluationHandler",
    "PretrainProgress",
    "PseudoClassUpdateHandler",
    "SegmentationMetricsWriter",
    "SegmentationOutputWriter",
    "ShapePriorHandler",
    "TrainingCheckpointer",
    "StepBudgetHandler",
    "add_source_paths",
    "assignment_from_output",
    "checkpoint_path",
    "average_summaries",
    "budget_epochs",
    "count_changed",
    "ema_decay",
    "find_last_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "evaluation_steps",
    "make_teacher",
    "save_checkpoint",
    "summarize_metric",
    "unwrap_network",
]
