"""Continual learning: does width reduce forgetting (Wenger et al. 2023, Sec. 3.3)?

* :mod:`~ntkcheck.continual.tasks`: task sequences (permuted, rotated, split, user data).
* :mod:`~ntkcheck.continual.sequential`: training task after task with a per-task budget
  (epochs, or until a training accuracy), and the accuracy matrix.
* :mod:`~ntkcheck.continual.forgetting`: average accuracy, average forgetting (Chaudhry et al.
  2018) and function-space forgetting (Doan et al. 2021).
* :mod:`~ntkcheck.continual.overlap`: the kernel-regime prediction of forgetting from the
  empirical NTK (Doan et al. 2021) and its principal-angle bound.
"""

from ntkcheck.continual.forgetting import (
    average_accuracy,
    average_forgetting,
    check_accuracy_matrix,
    output_forgetting,
    task_forgetting,
)
from ntkcheck.continual.overlap import (
    SequentialPrediction,
    TaskNTK,
    drift_norms,
    forgetting_bound,
    ntk_overlap_matrix,
    predict_sequential_gd,
    principal_angles,
    task_ntk,
)
from ntkcheck.continual.sequential import Budget, HeadView, SequentialResult, train_sequentially
from ntkcheck.continual.tasks import (
    SCENARIOS,
    Task,
    TaskSequence,
    permuted_tasks,
    rotated_tasks,
    split_tasks,
    task_sequence,
)

__all__ = [
    "SCENARIOS", "Budget", "HeadView", "SequentialPrediction", "SequentialResult", "Task",
    "TaskNTK", "TaskSequence", "average_accuracy", "average_forgetting",
    "check_accuracy_matrix", "drift_norms", "forgetting_bound", "ntk_overlap_matrix",
    "output_forgetting", "permuted_tasks", "predict_sequential_gd", "principal_angles",
    "rotated_tasks", "split_tasks", "task_forgetting", "task_ntk", "task_sequence",
    "train_sequentially",
]
