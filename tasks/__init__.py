"""Benchmark adapters, one module per benchmark; each defines ``TASK`` (a ``vamba_eval.task_api.TaskDef``).

Installed as the package ``vamba_eval.tasks``.
"""
