"""The task registry: importing this package registers every task (`TASKS.names()`).

The paper's benchmarks by their real names (HumanEvalPack, `defect-detection` = Devign, `clone-detection` =
BigCloneBench, ...) and, named `*-proxy`, the offline stand-ins that give micro models a signal.
"""

from sweeper.evals.tasks import aatk, codexglue, detection, explain, humanevalpack, robustness, security  # noqa: F401
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult

__all__ = ["TASKS", "Context", "Task", "TaskResult"]
