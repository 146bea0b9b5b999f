"""The compression sweep (a package: the search space, one trial and its record, running trials, the
choice rule, the reports, and the whole run): many students from one teacher, and the cheapest one within the accuracy budget.

`kdistill sweep` (and the Prefect flow `sweep`, flows/sweep.py) trains the students of params.yaml's
`sweep:` search space, as a grid or an Optuna search (TPE, each trial pruned on its val score after
each epoch), from the pipeline's teacher (models/teacher) and its teacher-output cache: the cache
stores every teacher layer's pooled states, so the teacher runs once for all depths and layer maps.
Each trial is the distill stage's own function run with the trial's `distill:` values, into
models/sweep/<trial>/, then measured: val (for choosing) and test (for reporting) accuracy and
macro-F1, parameters, size, batch-1 latency and batch-32 throughput of torch-fp32 and of the served
variant (the fastest within inference.max_drop of torch-fp32 on val, as bench/serving.py picks it,
with its timing functions).

The choice (`choose`), on the val split, in evaluate.metric:
1. Budget. A trial is in budget when its val score is at most sweep.max_drop below the teacher's (the
   point estimate; the paired interval of tasks.infra.stats.paired_comparison at evaluate.confidence
   is reported beside it) and its served batch-1 latency is at most sweep.max_latency_ms. Pruned
   trials are out. (The Optuna search scores trials by the same test, `optuna_value`.)
2. objective latency or size: the winner is the cheapest in-budget trial (served batch-1 ms, served
   MB); costs within COST_TIE (5%) of the lowest are ties (two trials of one shape differ by timing
   noise alone), won by the higher val score, then fewer layers, then the trial id. "The fastest student that loses at most max_drop".
3. objective accuracy: the best is the in-budget trial with the highest val score; the contenders are
   the in-budget trials not significantly worse than it (interval of trial - best not wholly below 0,
   paired on the same rows); the winner is the fastest contender (ties as above). A difference the
   val split cannot tell from noise does not buy a slower student.
Why the budget is a point estimate and not a significance test: "not significantly more than
max_drop below" admits, on a few hundred val rows, students several points worse (the quick profile's
3-layer trial: -2.0 on val, -4.8 on test), and "significantly within max_drop" refuses nearly everything.
Nothing in budget: the reports are written, params.yaml is left alone, and a GateError (exit 3).
Otherwise the winner's values are written into params.yaml's `distill:` section, comments kept
(what `dvc exp apply` does), so the next `dvc repro` evaluates and promotes it through the gates.

Interrupted sweeps resume: a trial whose models/sweep/<id>/trial.json exists is not rerun. The id
hashes the trial's values and everything else it depends on (the rest of the config, the teacher's
bytes, the data), so a retrained teacher or new data starts over.
"""
