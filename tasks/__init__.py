"""The distillation pipeline, in layers a newcomer can see from `ls tasks/`:

- the seven stage modules, where params.yaml and dvc.yaml name them: ingest, validate, teacher,
  distill, finetune, evaluate, promote (each exposes one plain function `python -m tasks.cli STAGE` calls);
- `core/`: the distillation core (student construction, losses, the training loop, the teacher-output
  cache, prediction). It needs nothing beyond torch and transformers, so GPU machines and
  multi-process launches can use it on its own;
- `lifecycle/`: the registry's write side (transactions, version archive, rollback) and the retraining cycle;
- `production/`: serving variants, batch scoring, the online API and drift monitoring (lifecycle and
  production never import each other: they meet in the lower packages);
- `sweep/`: the compression sweep (search space, trials, execution, the choice, reports);
- `models/`: model kinds and folders (loading, the zero-shot teacher, contrastive tuning, training helpers,
  the drift monitor);
- `quality/`: the Great Expectations suites, their runner, and the raw-input and new-batch doors;
- `infra/`: the parameter schema, storage paths, tables and splits, metrics and statistics, logging, the
  lock, the drop folder, the production log and the registry's read side;
- `precisions.py`: base.precision's names, the one leaf both the schema and the core ask;
- `cli.py`: the `kdistill` command.

Which layer may import which is declared in pyproject.toml ([tool.importlinter]) and checked by
`lint-imports` in `make test`. Nothing in this package needs a Prefect server.
"""
