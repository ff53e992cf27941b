"""Single-task reference: each task trained alone from the base model (a_0,i of FWT).

After a task is evaluated its update is taken out of the model again, so every task starts from
the same base weights. Only the task itself is evaluated.
"""

from jumplora.methods.base import Method, register


@register("single")
class SingleTask(Method):
    eval_scope = "current"
    keeps_updates = False
