"""The results pages: prose that explains (no number in it), around the tables of docs/gen/tables.py."""

from __future__ import annotations

from docs.gen import tables
import json

from docs.gen.common import NOTE, ROOT, provenance, scrub

SOURCE = NOTE.format(source="reports/bench/*.json and reports/sweep/")


def _page(title: str, intro: str, sections: list[tuple[str, str, str]]) -> str:
    out = [f"# {title}", "", SOURCE, "", intro.strip(), ""]
    for heading, text, body in sections:
        out += [f"## {heading}", "", text.strip(), "", body.strip(), ""]
    return scrub("\n".join(out))  # a results file may hold a path of the machine it ran on


# The results files the pages below (and docs/how-to/base-teacher.md) render; any other reports/bench/*.json is listed on the index page
# until a renderer is written for it (docs/gen/tables.py), so a new bench never goes unmentioned.
RENDERED = {"ablation", "api_load", "base_teacher", "base_teacher_trec50_minilm_e6", "continual", "distill_vs_trainer", "distill_epochs", "drift_calibration", "drift_log_growth",
            "hidden_loss", "label_efficiency", "make_run", "precision", "precision_accuracy", "scaling", "serving",
            "stage_profile_distill", "stage_profile_teacher", "stage_profile_teacher_foreach_adamw", "students",
            "sweep_quick", "sweep_trec50", "zero_shot"}


def _unrendered() -> tuple[str, str]:
    """(text, body) of the index section naming the results files no page renders yet."""
    files = sorted(p for p in (ROOT / "reports" / "bench").glob("*.json") if p.stem not in RENDERED)
    if not files:
        return "Every file in `reports/bench/` has its table on one of the pages above.", ""
    lines = [provenance(f"reports/bench/{p.name}", json.loads(p.read_text(encoding="utf-8"))) for p in files]
    return ("These files have no table on the pages yet (a renderer in `docs/gen/tables.py` adds one):",
            "\n\n".join(lines))


def index() -> str:
    return _page("Results", """
Every number on these pages is read from a results file of the repository (`reports/bench/*.json`,
written by the script of `bench/` named with it, or `reports/sweep/`, written by `kdistill sweep`) when
`make docs` runs; a test fails when a page differs from a fresh generation. Each table says which file
it comes from and the command, machine and date that file records, or that it records none: those
were written by hand into the README of the time, and are not repeated here.

Latencies are medians of batch-1 runs at one thread unless a table says otherwise; most were
measured on a small shared CPU machine without a GPU (each table's machine line says what the file
records), so absolute times are that machine's; ratios between rows of one table are the point.
""", [("Headline: the embedded default", """
The pipeline's teacher and the student `kdistill sweep` chose on the embedded default (movie
reviews): the fastest trial within the accuracy budget, served in its fastest variant.
""", tables.headline()),
          ("Pages", """
- [Pipeline, training and serving](pipeline.md): serving variants, where a stage's time goes, fp32
  against bf16, our loop against the Hugging Face Trainer, cost against rows, hidden-state alignment.
- [Compression sweeps](sweep.md): depths, temperatures, static students and pruned vocabularies on three tasks, with their Pareto charts; static and pruned students against the teacher on four tasks.
- [What distillation adds](distillation.md): a seeded ablation, few labels with unlabelled text,
  the zero-shot teacher.
- [Drift and continual learning](drift.md): the monitor's false alarms and detection, its cost as
  the log grows, two retraining cycles on real domain shifts, the API under load.
""", ""),
          ("Results files without a table yet", *_unrendered()),
          ("Measured without a results file", """
Earlier READMEs also reported measurements whose numbers were copied from logs by hand and have no
file in `reports/bench/`: the `torch-bf16` serving variant next to the others, the trec50 task end
to end, and the peak memory of validating a large file. They are not repeated here; each returns
once its bench writes a JSON.
""", "")])


def pipeline() -> str:
    return _page("Pipeline, training and serving", """
Measurements of the pipeline's stages and of the served model. A run of `make run` prints its own
teacher-against-student table (`kdistill summary`, from `reports/metrics.json`).
""", [
        ("`make run` on a fresh clone", """
`bench/make_run.py` clones the repository's committed HEAD and runs `make run` there, timestamping
each line of its output: a stage's time runs from DVC's "Running stage" line to the next stage's, so
it includes the stage's process start and DVC's bookkeeping. The "fresh" column installs its own
virtual environment, as a new user does; the "reuse" column links an installed one, so it times the
pipeline alone.
""", tables.make_run()),
        ("How many epochs the default's distill needs", """
`bench/distill_epochs.py` fine-tunes the default teacher once, as `make run` does, and then runs the
default's distill stage at each epochs value over seeds, with nothing else changed (the epoch best on
validation is kept). Seed 42 is `make run`'s own. Each value is paired by seed against the baseline
on the same test rows. The training seconds leave out the teacher-output cache, which the first run
builds and the others read; every `make run` builds it once.
""", tables.distill_epochs()),
        ("Serving variants", """
`bench/serving.py` times the teacher and the student in every serving variant (PyTorch fp32 and
dynamic int8, ONNX Runtime fp32 and int8), interleaved, and scores each on the test split. The
chosen variant is the fastest student variant within `inference.max_drop` of the fp32 student;
`inference.variant: auto` serves it for the weights whose hash the file records.
""", tables.serving()),
        ("Where a stage's time goes", """
`bench/stage_profile.py` runs a stage's own function under cProfile for one epoch and splits its
time into parts. The first column is the teacher stage before the optimiser became PyTorch's fused
AdamW kernel, the second after it: the optimiser step was the part that changed. Tokenisation and
data loading are a small share of either stage.
""", tables.stage_profile()),
        ("fp32 or bf16", """
`bench/precision.py` alternates fp32 and bf16 autocast on the same models and rows. `base.precision:
auto` picks bf16 only where the CPU has bf16 arithmetic (the machine line says whether this one had).
Below it, `bench/precision_accuracy.py` trains the default student in each precision over three seeds
and pairs their test answers.
""", tables.precision() + "\n\n" + tables.precision_accuracy()),
        ("Distillation against the Hugging Face Trainer", """
`bench/distill_vs_trainer.py`: the same teacher, student initialisation, loss, optimiser settings
and rows, three ways. The baseline is what a careful `Trainer` user writes (the teacher online in
`compute_loss`, dynamic padding, length-grouped batches); the second row pads every batch to
`max_length`; ours is the `distill` stage (the teacher-output cache, whose build is charged to it,
dynamic padding, length-grouped batches, its own loop). "To target" is the training time until
validation accuracy first reached the best that every row reached.
""", tables.distill_vs_trainer()),
        ("Distillation cost against rows", """
`bench/scaling.py`: the `distill` stage (cache build and one epoch) on the labelled rows plus more
and more unlabelled text, each size in its own process. Memory stays flat because the teacher's
outputs are memory-mapped files read a batch at a time.
""", tables.scaling()),
        ("Hidden-state alignment", """
`bench/hidden_loss.py`: the cached, mean-pooled hidden-state alignment (the default), per-token
alignment with the teacher running online (DistilBERT's), and none.
""", tables.hidden_loss()),
        ("Not yet measured: the GPU benchmark", """
`bench/gpu_distill.py` (a BERT-base-shaped teacher into a 6-layer student; bf16 autocast, fused
AdamW, `torch.compile` on and off, the logit cache on and off, the Trainer baseline; samples/s,
tokens/s and MFU) needs only torch and transformers on a GPU machine: `python bench/gpu_distill.py`.
It has no results file yet; its CPU smoke run (`--tiny --device cpu`) is part of `make test`.
""", ""),
    ])


def sweep() -> str:
    return _page("Compression sweeps", """
`kdistill sweep` trains the students of params.yaml's `sweep:` section from the pipeline's teacher
and picks the fastest within `sweep.max_drop` of the teacher on val ([Compression sweep](../how-to/sweep.md)).
In each table, bold is the choice; "vs teacher" is the paired difference on val with its interval.
""", [
        ("The embedded default", """
params.yaml's `sweep:` on a workspace after `make run`, every family it names (transformer depths,
static widths, each with and without a pruned vocabulary); the command under the table shows what it
overrode. The files are `reports/sweep/` in the repository (`dvc metrics show`, `dvc plots show`).

![Compression sweep on the embedded default: val accuracy against served batch-1 latency](img/pareto.png)
""", tables.sweep("reports/sweep/trials.json")),
        ("The quick profile of the embedded default", """
The workspace of `make quick` (a few hundred val rows, so wide intervals): a student can be inside
the budget on val and further below the teacher on test. A larger `ingest.val_size` narrows the
intervals.

![Compression sweep, quick profile](img/sweep_quick.png)
""", tables.sweep("reports/bench/sweep_quick.json")),
        ("trec50 (50 classes)", """
The 50-class TREC task, where deeper students beat their teacher; the choice is still the fastest
student within the budget. `sweep.objective: accuracy` picks the most accurate in-budget trial
instead, or a faster one not significantly below it.

![trec50 sweep](img/sweep_trec50.png)
""", tables.sweep("reports/bench/sweep_trec50.json")),
        ("Students beyond depth: static embeddings and a pruned vocabulary", """
`bench/students.py` ([Student kinds](../how-to/student-kinds.md)): per task, one fine-tuned teacher;
per seed, the static student (model2vec's table of that teacher, `distill.student: static`) trained
on soft targets and labels (`static-kd+ce`), soft targets alone (`static-kd`) or labels alone
(`static-ce`); the plainest baselines, model2vec embeddings with logistic regression (`m2v+logreg`
from the fine-tuned teacher, `m2v-base+logreg` from the base sentence embedder; deterministic, one fit
for every seed); and the 3-layer transformer student with and without its vocabulary pruned to the
transfer set (`3L`, `3L-pruned`, the same weights). "vs" is the paired difference on the same test
rows, seed by seed, with how many seeds it was positive. Every point's seed-1 model and the fp32
teacher are timed in one process; "served" is a point's fastest variant within `inference.max_drop`
of its own fp32 on val. The goals below each task are checked on val against the teacher.
""", tables.students()),
    ])


def distillation() -> str:
    return _page("What distillation adds", """
What the teacher buys over training the small model on the labels alone, measured with seeds and
paired differences. In short: with every training row labelled, the teacher adds nothing
measurable over fine-tuning the same small student on the labels; what the 3-layer student buys is
speed at the teacher's accuracy. The teacher pays where labels are few and unlabelled text is
plentiful, once the few-label teacher is clearly better than a student trained on the labels.
""", [
        ("A seeded ablation", """
`bench/ablation.py`: each task's teacher teaches students made from some of its layers, the same
initialisation for every variant. `ce`: the labels alone; `kd`: the teacher's soft targets alone;
`kd+ce`: both; `kd+ce+hidden`: both plus the pooled hidden-state alignment (the defaults);
`+unlabelled`: the same with unlabelled snippets as extra transfer text (movies only). Seeds change
data order, dropout and the new head, never the split; the difference to `ce` is paired by seed.
The seconds are wall time per student on a shared machine, not speed figures.
""", tables.ablation()),
        ("Few labels", """
`bench/label_efficiency.py`: **a** is the 3-layer student trained on the labelled rows alone;
**b** is the teacher fine-tuned on them (or tuned with SetFit, whichever val prefers), distilled into
the same student over the labelled and the unlabelled rows. At 100% there is no unlabelled text,
so that row compares initialisations, not the unlabelled text.

![label efficiency](img/label_efficiency.png)
""", tables.label_efficiency()),
        ("Zero-shot", """
`bench/zero_shot.py`: the train split without its labels, one description per label
([Few labels and zero-shot](../how-to/few-labels.md)). A zero-shot teacher is a cold start, not a
substitute for labels; the student distilled from it keeps what the teacher has. Centring helps
where the embedder prefers one description.
""", tables.zero_shot()),
    ])


def drift() -> str:
    return _page("Drift and continual learning", """
How often the drift monitor raises a false alarm and how much of another domain it takes to be seen,
what the monitor costs as the production log grows, what retraining does on real domain shifts,
and the API under load.
""", [
        ("Drift monitor calibration", """
`bench/drift_calibration.py --workspace runs/quick`: held-out windows come from movie snippets the
model never saw; mixed windows replace a share of their rows with tweets, Amazon or NYT snippets.
The window classifiers cannot see a segment that is a small share of the window; the per-row
`outliers` signal can.

![power curve](img/drift_calibration.svg)
""", tables.drift_calibration()),
        ("Drift's cost as the log grows", """
`bench/drift_log_growth.py`: a synthetic production log in the log's schema, grown by factors; the
time to read the window the monitor needs, against reading every part file.
""", tables.drift_log_growth()),
        ("Continual learning on real domain shifts", """
`bench/continual.py`: each cycle drops labelled rows of another snippet domain into
`data/incoming/labelled/` and scores more of it as production traffic; the monitor runs on the
log and retraining runs with its verdict as the trigger. "From scratch" is the same cycle without
rehearsal, warm start or learning-without-forgetting.
""", tables.continual()),
        ("The API under load", """
`bench/api_load.py`: concurrent clients against `kdistill api` (torch-fp32).
""", tables.api_load()),
    ])


PAGES = {"docs/results/index.md": index, "docs/results/pipeline.md": pipeline, "docs/results/sweep.md": sweep,
         "docs/results/distillation.md": distillation, "docs/results/drift.md": drift}
# Figures the results pages show, linked (not copied) from where the benches and the sweep write them.
IMAGES = {"docs/results/img/pareto.png": "reports/sweep/pareto.png",
          "docs/results/img/sweep_quick.png": "reports/bench/sweep_quick.png",
          "docs/results/img/sweep_trec50.png": "reports/bench/sweep_trec50.png",
          "docs/results/img/label_efficiency.png": "reports/bench/label_efficiency.png",
          "docs/results/img/drift_calibration.svg": "reports/bench/drift_calibration.svg"}
