"""`base.precision`'s names: the one home that both the params schema (tasks.infra.config) and the
distillation core (tasks.core.precision) ask.

A leaf below both: it imports nothing, so the schema does not depend on the core (an edit to the
training loop would otherwise re-run every stage) and the core stays free of the rest of the stack.
"""

PRECISIONS = ("auto", "fp32", "bf16")
