"""IncLoRA: a new LoRA adapter per task, trained on that task alone and merged; nothing else.

The base `Method` already behaves this way; this file only gives it its name. With JumpLoRA
(`jumplora`, `jumplora+inclora`) the same strategy trains gated adapters.
"""

from jumplora.methods.base import Method, register


@register("inclora")
class IncLoRA(Method):
    pass
