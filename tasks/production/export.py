"""Serving variants of a saved classifier: PyTorch fp32, dynamic int8 or bf16, ONNX Runtime fp32 or int8.

The ONNX files are exported on first use into a cache beside the model folder, never inside it:
`<parent>/.serving-cache/<weights sha256[:16]>/` (`models/production/` -> `models/.serving-cache/...`),
so a read-only or DVC-tracked model folder serves unchanged, and a folder whose weights were replaced
(a re-run, `dvc checkout`, a promotion) finds no files of the old weights under its new key. Where
the parent cannot be written, the user's cache (`$XDG_CACHE_HOME/kdistill/serving`) is used.
Every variant runs at a fixed intra-op thread count, so latencies are comparable. `torch-bf16`
keeps the fp32 weights and computes under bf16 autocast (tasks.core.precision): much faster batches
on CPUs with hardware bf16 (AVX512-BF16, AMX), slower ones without it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

from tasks.core.data import Collator, TokenDataset
from tasks.core.precision import autocast, resolve_precision
from tasks.infra.config import choices, schema_field
from tasks.infra.errors import ConfigError
from tasks.models.loading import load_classifier, resolve_model
from tasks.infra.storage import atomic_path, hash_dir, read_json, write_json
from tasks.models.static import is_static

log = logging.getLogger("kd")

# The serving variants: the schema's inference.variant choices but `auto` (which picks one of them), in its order.
VARIANTS = tuple(v for v in choices(schema_field("inference.variant")) if v != "auto")
OPSET = 18  # the dynamo exporter's native opset; ONNX Runtime 1.32 runs it
ONNX_FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantiser's INFO logs and warnings (hundreds of lines a model)."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


class _LogitsOnly(torch.nn.Module):
    """(input_ids, attention_mask) -> logits: the plain-tensor signature the exporter needs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _sample_inputs(vocab_size: int, batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids [B, L] and a mask [B, L] whose first row is half padding (so masking is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, length // 2 + 1:] = 0
    return ids, mask


def export_onnx(model_dir: str | Path, out_path: str | Path, opset: int = OPSET, atol: float = 1e-4) -> float:
    """Export a saved sequence classifier to ONNX, with dynamic batch and sequence axes.

    Uses the torch.export-based exporter (the TorchScript one is deprecated in torch 2.13, and with
    SDPA attention its logits were 1e-2 off). Attention is exported in eager form, then ONNX
    Runtime's transformer optimiser fuses bias+GELU and residual+LayerNorm (~1.5x at batch 1 here).
    A static student (tasks/models/static.py) exports as it is: a Gather, the masked mean and the head.
    Inputs `input_ids`, `attention_mask`: int64 [batch, seq]; output `logits`: float32 [batch, C].

    Args:
        model_dir: a saved Hugging Face classifier folder (BERT family, or a static student).
        out_path: the .onnx file to write (atomically).
        opset: ONNX opset version.
        atol: largest allowed |ONNX Runtime logits - PyTorch logits| on a parity check.

    Returns:
        The largest absolute logit difference seen on the parity check.

    Raises:
        RuntimeError: the exported graph disagrees with PyTorch by more than `atol`.
    """
    model = load_trained(model_dir)
    static = is_static(model)  # a static student has no attention: nothing for the BERT fusions to do
    if not static:
        model.set_attn_implementation("eager")  # plain MatMul/Softmax: what ORT's fusions recognise
    wrapped = _LogitsOnly(model.eval()).eval()
    ids, mask = _sample_inputs(model.config.vocab_size, 2, 8)
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("seq", max=model.config.max_position_embeddings)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    start = time.perf_counter()
    with _quiet(), torch.inference_mode(False):
        program = torch.onnx.export(wrapped, (ids, mask), dynamo=True, dynamic_shapes=shapes, opset_version=opset,
                                    input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                    external_data=False, verbose=False)
    with atomic_path(out_path) as tmp:
        program.save(str(tmp))
        if not static:
            _fuse_for_ort(tmp, model.config)
        diff = _parity(wrapped, tmp, model.config.vocab_size)
        if diff > atol:
            raise RuntimeError(f"{out_path}: ONNX Runtime logits differ from PyTorch by {diff:.2e} > {atol}")
    log.info("exported %s in %.1f s (max |Δlogit| %.1e)", out_path, time.perf_counter() - start, diff)
    return diff


def _fuse_for_ort(path: Path, config) -> None:
    """Rewrite `path` in place with ONNX Runtime's BERT fusions (contrib ops: ORT-only from here on)."""
    from onnxruntime.transformers import optimizer

    with _quiet():
        fused = optimizer.optimize_model(str(path), model_type="bert", hidden_size=getattr(config, "hidden_size", 0),
                                         num_heads=getattr(config, "num_attention_heads", 0))
        fused.save_model_to_file(str(path))


@torch.inference_mode()
def _parity(model: torch.nn.Module, onnx_path: Path, vocab_size: int) -> float:
    """Largest |ORT - torch| logit difference over a few shapes, batch 1 included."""
    session = _ort_session(onnx_path, threads=1)
    worst = 0.0
    for i, (batch, length) in enumerate([(1, 1), (1, 13), (3, 40)]):
        ids, mask = _sample_inputs(vocab_size, batch, length, seed=i + 1)
        ref = model(ids, mask).numpy()
        out = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        worst = max(worst, float(np.abs(ref - out).max()))
    return worst


def quantize_onnx_int8(in_path: str | Path, out_path: str | Path) -> None:
    """Dynamic int8 quantisation of an ONNX model: int8 weights, activations quantised per batch.

    Args:
        in_path: an fp32 .onnx file (from `export_onnx`).
        out_path: the int8 .onnx file to write (atomically).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: shape inference cannot type the outputs of ORT's fused contrib ops.
    with atomic_path(out_path) as tmp, _quiet():
        quantize_dynamic(str(in_path), str(tmp), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def quantize_torch_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every nn.Linear (weights int8, activations per batch); CPU only.

    `torch.ao.quantization` is deprecated in favour of torchao but still works in torch 2.13;
    its deprecation warnings are silenced here rather than repeated on every load.
    """
    with _quiet():
        return torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8)


class Predictor:
    """One serving variant of one model: token ids in, logits out; `labels` in id order, `size_mb`
    its weights on disk (for torch-int8, the serialised quantised state dict)."""

    variant: str
    labels: list[str]
    size_mb: float

    def predict_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits float32 [B, C] for input_ids and attention_mask, int64 [B, L]."""
        raise NotImplementedError


class TorchPredictor(Predictor):
    """A PyTorch model (fp32, dynamically quantised int8, or fp32 weights computing in bf16) on the CPU."""

    def __init__(self, model: torch.nn.Module, variant: str, labels: list[str], size_mb: float,
                 dtype: torch.dtype | None = None):
        self.model, self.variant, self.labels, self.size_mb = model.cpu().eval(), variant, labels, size_mb
        self.dtype = dtype  # the autocast dtype; None: fp32

    @torch.inference_mode()
    def predict_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with autocast("cpu", self.dtype):
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.logits.float().numpy()


class OnnxPredictor(Predictor):
    """An ONNX Runtime session (CPU execution provider, all graph optimisations)."""

    def __init__(self, path: Path, variant: str, labels: list[str], threads: int):
        self.session, self.variant, self.labels = _ort_session(path, threads), variant, labels
        self.size_mb = path.stat().st_size / 1e6

    def predict_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def _ort_session(path: str | Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ORT's default (one per physical core)
    options.inter_op_num_threads = 1  # the graph is a chain: parallel branches buy nothing
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fuses attention, GELU, LN
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def serving_cache(model_dir: str | Path, weights: str | None = None) -> Path:
    """The folder of a model's ONNX files: `<parent>/.serving-cache/<weights sha256[:16]>/` (see the module doc).

    Args:
        model_dir: the saved model folder.
        weights: its `weights_hash`, when already known.
    """
    weights = weights or weights_hash(model_dir)
    for root in (Path(model_dir).resolve().parent / ".serving-cache", _user_cache()):
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not (root / ".gitignore").is_file():  # a cache, never a file to commit
                (root / ".gitignore").write_text("*\n")
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root / weights[:16]
    raise ConfigError(f"--model={model_dir}: no writable folder for its ONNX files (beside it, or {_user_cache()})")


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdistill" / "serving"


def ensure_onnx(model_dir: str | Path, variant: str) -> Path:
    """The ONNX file of `variant` in the model's serving cache, exported when missing or made by another version."""
    weights = weights_hash(model_dir)
    folder = serving_cache(model_dir, weights)
    folder.mkdir(exist_ok=True)
    fp32, target = folder / ONNX_FILES["onnx-fp32"], folder / ONNX_FILES[variant]
    manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
    if manifest.get("weights_sha256") != weights or not fp32.is_file():
        diff = export_onnx(model_dir, fp32)
        manifest = {"weights_sha256": weights, "opset": OPSET, "max_abs_diff": diff, "torch": torch.__version__}
        (folder / ONNX_FILES["onnx-int8"]).unlink(missing_ok=True)
        write_json(folder / "manifest.json", manifest)
    if not target.is_file():
        quantize_onnx_int8(fp32, target)
    return target


def weights_hash(model_dir: str | Path) -> str:
    """The folder hash (tasks.infra.storage.hash_dir) of a model's weights files: what ONNX exports and
    benchmark choices are keyed by, so that a new tokenizer file or registry stamp does not re-export them.

    Raises:
        ConfigError: the folder holds no weights.
    """
    for pattern in ("*.safetensors", "*.bin"):
        if any(Path(model_dir).glob(pattern)):
            return hash_dir(model_dir, pattern)
    raise ConfigError(f"--model={model_dir}: no model weights (*.safetensors) in the folder")


def load_trained(model_dir: str | Path) -> torch.nn.Module:
    """A saved classifier to serve; refused when its head would be drawn at random.

    `from_pretrained` fills a head missing from the weights, or of another size than config.json's
    labels, with random numbers and goes on: served, it would answer at random without a word.

    Raises:
        ConfigError: the folder cannot be loaded, or its head is not in its weights.
    """
    model, head_ready = load_classifier(str(model_dir), None, key="--model")
    if not head_ready:
        raise ConfigError(f"--model={model_dir}: its weights hold no trained classifier head for the "
                          f"{model.config.num_labels} labels of its config.json (missing, or of another size), so it "
                          "would answer at random; expected a fine-tuned classifier folder")
    return model


def load_predictor(model_dir: str | Path, variant: str, threads: int = 1) -> Predictor:
    """Load one serving variant of a saved classifier.

    Args:
        model_dir: a saved Hugging Face classifier folder.
        variant: torch-fp32 | torch-int8 | torch-bf16 | onnx-fp32 | onnx-int8 (`VARIANTS`).
        threads: intra-op threads (torch's is process-wide); 0 keeps the library default.

    Returns:
        A `Predictor`; ONNX variants are exported into the model's serving cache on first use.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"inference.variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant.startswith("onnx"):
        folder = Path(resolve_model(str(model_dir), "--model"))
        if not (folder / "config.json").is_file():
            raise ConfigError(f"--model={model_dir}: the ONNX variants need a saved model folder to export into")
        try:
            config = AutoConfig.from_pretrained(folder)  # the labels, without loading the weights
        except (OSError, ValueError) as err:
            raise ConfigError(f"--model={model_dir}: cannot read its config.json ({str(err).strip()[:80]})") from None
        labels = [config.id2label[i] for i in range(config.num_labels)]
        return OnnxPredictor(ensure_onnx(folder, variant), variant, labels, threads)
    model = load_trained(model_dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if threads > 0:
        torch.set_num_threads(threads)
    if variant == "torch-int8":
        model = quantize_torch_int8(model)
    buffer = io.BytesIO()  # the serialised state dict: packed int8 weights count as int8
    torch.save(model.state_dict(), buffer)
    dtype = resolve_precision("bf16", "cpu") if variant == "torch-bf16" else None
    return TorchPredictor(model, variant, labels, buffer.getbuffer().nbytes / 1e6, dtype)


def predict_dataset(predictor: Predictor, data: TokenDataset, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Logits float32 [N, C] for every row, in the dataset's order; batches of similar length."""
    collate = Collator(pad_id)
    order = np.argsort(-data.lengths, kind="stable")  # longest first, as tasks.core.loop does
    out = np.zeros((len(data), len(predictor.labels)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = collate([data[int(i)] for i in rows])
        out[rows] = predictor.predict_logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    return out


def choose_variant(results: dict[str, dict], max_drop: float = 0.01) -> str:
    """The fastest student variant at batch 1 whose accuracy is within `max_drop` of torch-fp32.

    Args:
        results: variant -> {"latency_ms_b1": float, "accuracy": float}; must include torch-fp32.
        max_drop: accuracy (a fraction: 0.01 is one point) a variant may lose against torch-fp32.

    Returns:
        The chosen variant; torch-fp32 itself when no other one passes.
    """
    if "torch-fp32" not in results:
        raise ValueError("choose_variant: results need the torch-fp32 row as the accuracy reference")
    floor = results["torch-fp32"]["accuracy"] - max_drop - 1e-9  # 1e-9: 0.9 - 0.01 is not exactly 0.89
    passing = [v for v, r in results.items() if r["accuracy"] >= floor]
    return min(passing, key=lambda v: results[v]["latency_ms_b1"])


def resolve_variant(setting: str, model_dir: str | Path, bench_json: str | Path) -> str:
    """The variant to serve: `setting` itself, or for `auto` the one the last serving benchmark chose.

    `auto` trusts the benchmark only when it measured these very weights (same sha256); otherwise,
    or without a benchmark, it serves torch-fp32, the variant that needs no accuracy check.
    """
    if setting != "auto":
        return setting
    bench_json = Path(bench_json)
    if not bench_json.is_file() or not Path(model_dir).is_dir():
        return "torch-fp32"
    report = read_json(bench_json)
    chosen = report.get("chosen", {}).get("variant", "torch-fp32")
    if report.get("student_weights_sha256") != weights_hash(model_dir):
        log.warning("inference.variant=auto: %s measured other weights than %s; serving torch-fp32",
                    bench_json, model_dir)
        return "torch-fp32"
    return chosen


# Timing of serving variants: bench/serving.py's benchmark and the compression sweep (tasks/sweep/) both
# measure with these, so a sweep trial's latency means what the serving benchmark's does.

def serving_inputs(data: TokenDataset, pad_id: int, runs: int, batch_size: int) -> tuple[list, list]:
    """Batch-1 inputs (rows in order, cycled) and in-order batches of `batch_size`, as numpy (ids, mask) pairs."""
    collate = Collator(pad_id)

    def as_numpy(rows):
        batch = collate([data[i] for i in rows])
        return batch["input_ids"].numpy(), batch["attention_mask"].numpy()

    singles = [as_numpy([i % len(data)]) for i in range(runs)]
    batches = [as_numpy(range(s, min(s + batch_size, len(data)))) for s in range(0, len(data), batch_size)]
    return singles, batches


def interleaved_latencies(predictors: dict, singles: list | dict, warmup: int, block: int) -> dict[str, list[float]]:
    """Batch-1 latencies (ms) of every predictor on the same inputs, interleaved in blocks, so a load
    spike on a shared machine lands on every predictor rather than on one.

    `singles` is one list of (ids, mask) for all, or a dict keyed like `predictors` (models with other
    tokenizers each read the same rows in their own tokens); the shortest list sets the number of runs.
    """
    inputs = singles if isinstance(singles, dict) else {key: singles for key in predictors}
    runs = min(len(inputs[key]) for key in predictors)
    times: dict[str, list[float]] = {key: [] for key in predictors}
    for key, p in predictors.items():
        for ids, mask in inputs[key][:warmup]:
            p.predict_logits(ids, mask)
    for start in range(warmup, runs, block):
        for key, p in predictors.items():
            for ids, mask in inputs[key][start:min(start + block, runs)]:
                t0 = time.perf_counter()
                p.predict_logits(ids, mask)
                times[key].append((time.perf_counter() - t0) * 1000)
    return times


def throughput_and_accuracy(predictor: Predictor, batches: list, labels: np.ndarray) -> tuple[float, float]:
    """Rows/s over the whole split in batches (one warm-up batch first), and the accuracy."""
    predictor.predict_logits(*batches[0])
    start = time.perf_counter()
    logits = [predictor.predict_logits(ids, mask) for ids, mask in batches]
    seconds = time.perf_counter() - start
    preds = np.concatenate(logits).argmax(-1)
    return len(labels) / seconds, float((preds == labels).mean())
