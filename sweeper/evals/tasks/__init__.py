"""The task registry: importing this package registers every task (`TASKS.names()`)."""

from sweeper.evals.tasks import detection, explain, humanevalpack, robustness, security
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult

__all__ = ["TASKS", "Context", "Task", "TaskResult", "detection", "explain", "humanevalpack", "robustness", "security"]
