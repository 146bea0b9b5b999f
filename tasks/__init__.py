"""Stage logic of the distillation pipeline: plain typed functions, one module per stage.

Nothing in this package needs a Prefect server; `tasks.core` needs nothing beyond torch and
transformers so that GPU machines and multi-process launches can use it on its own.
"""
