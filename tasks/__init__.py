"""The distillation pipeline, in layers a newcomer can see from `ls tasks/`:

- the seven stage modules, where params.yaml and dvc.yaml name them: ingest, validate, teacher,
  distill, finetune, evaluate, promote (each exposes one plain function `python -m tasks.cli STAGE` calls);
- `core/`: the distillation core (student construction, losses, the training loop, the teacher-output
  cache, prediction). It needs nothing beyond torch and transformers, so GPU machines and
  multi-process launches can use it on its own;
- `lifecycle/`: the registry's write side (transactions, version archive, rollback) and the retraining cycle;
- `production/`: serving variants, batch scoring, the online API and drift monitoring (lifecycle and
  production never import each other: they meet in the lower packages);
- `models/`: model kinds and folders (loading, the zero-shot teacher, contrastive tuning, the drift monitor);
- `quality/`: the Great Expectations suites and their runner;
- `infra/`: the parameter schema, storage paths, tables, metrics and statistics, the lock, the drop
  folder, the production log and the registry's read side;
- `precisions.py`: base.precision's names, the one leaf both the schema and the core ask;
- `cli.py`: the `kdistill` command.

Nothing in this package needs a Prefect server.
"""
