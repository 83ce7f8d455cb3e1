"""The task registry: importing this package registers every task (`TASKS.names()`).

The paper's benchmarks by their real names (HumanEvalPack, `defect-detection` = Devign, `clone-detection` =
BigCloneBench, `recode-*` = ReCode, `aatk-dow` = Asleep at the Keyboard) and, named `*-proxy`, the offline stand-ins that give micro models a signal;
`humaneval-line-end` is sweeper's own task (no paper's), for the same reason.
"""

from sweeper.evals.tasks import (  # noqa: F401 (each module registers its tasks)
    aatk,
    codexglue,
    detection,
    explain,
    humanevalpack,
    line_end,
    recode,
    robustness,
    security,
)
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult

__all__ = ["TASKS", "Context", "Task", "TaskResult"]
