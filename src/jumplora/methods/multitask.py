"""Multi-task reference: one adapter trained on the union of all tasks, an upper bound for CL."""

from jumplora.methods.base import Method, register


@register("mtl")
class MultiTask(Method):
    def stages(self, tasks):
        return [list(tasks)]
