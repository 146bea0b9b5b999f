"""The distillation pipeline, in layers a newcomer can see from `ls tasks/`:

- the seven stage modules, where params.yaml and dvc.yaml name them: ingest, validate, teacher,
  distill, finetune, evaluate, promote (each exposes one plain function `python -m tasks.cli STAGE` calls);
- `core/`: the distillation core (student construction, losses, the training loop, the teacher-output
  cache, prediction). It needs nothing beyond torch and transformers, so GPU machines and
  multi-process launches can use it on its own;
- `lifecycle/`: the registry, production folder and version archive (one lock), and the retraining cycle;
- `production/`: serving variants, batch scoring, the online API and drift monitoring;
- `infra/`: the parameter schema, storage paths, tables, models, metrics and statistics, and the
  data-quality suites every layer shares;
- `cli.py`: the `kdistill` command.

Nothing in this package needs a Prefect server.
"""
