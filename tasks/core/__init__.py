"""The distillation core: student construction, losses, the teacher-output cache, the training loop and
prediction. It needs nothing beyond torch and transformers (pyproject's import contract `core` says so),
so GPU machines and multi-process launches use it without the rest of the stack."""
