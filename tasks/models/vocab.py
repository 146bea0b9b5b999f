"""Vocabulary pruning of a transformer student (`distill.prune_vocab`): keep the tokens its task uses.

The default 3-layer student holds ~11.9 M of its 17.4 M parameters in the word-embedding table of
the teacher's 30,522-token vocabulary, most of which the task's text never uses. After training,
`prune_vocabulary` keeps the rows of the token ids that occur in the transfer set (the labelled
train rows plus any unlabelled transfer text: everything the student learned from) plus the special
tokens, renumbers them 0..K-1 in their old order, and writes a tokenizer whose vocabulary is just
those tokens with the new ids.

What an unseen word becomes: WordPiece splits a word greedily into the longest pieces its vocabulary
holds. A word of the transfer set keeps exactly its old pieces (each piece survived, and none longer
can appear), so every transfer text tokenises to the same tokens and the student's outputs on it do
not change. A new word is split into the surviving pieces where they cover it (`unwatchable` ->
`un ##watch ##able` if those pieces survived), and becomes [UNK] where they do not (WordPiece maps
the whole word to [UNK] when one of its pieces is missing). Only WordPiece vocabularies (a
vocab.txt, or a tokenizer.json of a WordPiece model) are pruned: a BPE merge table or a
SentencePiece model cannot drop tokens this way, and a tokenizer without a vocabulary file is
refused in one line.

Retraining (tasks/lifecycle/retrain.py) reads the teacher's token ids: `unprune` puts a pruned
champion back on the teacher's vocabulary (its own rows for the tokens it kept, the teacher's rows
for the others) before training, and the challenger is pruned again on its own transfer set.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel

from tasks.core.data import TokenDataset
from tasks.infra.errors import ConfigError

log = logging.getLogger("kd")

KEY = "distill.prune_vocab"


def _wordpiece_files(folder: Path, where: str) -> tuple[dict | None, list[str] | None]:
    """The saved tokenizer's tokenizer.json (when a WordPiece model) and vocab.txt lines (when present).

    Raises:
        ConfigError: neither a vocab.txt nor a WordPiece tokenizer.json: no vocabulary to prune.
    """
    backend = None
    if (folder / "tokenizer.json").is_file():
        backend = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        kind = (backend.get("model") or {}).get("type")
        if kind != "WordPiece":
            raise ConfigError(f"{KEY}: the tokenizer of {where} has no WordPiece vocabulary file (vocab.txt): its "
                              f"tokenizer.json holds a {kind or 'unknown'} model, whose tokens cannot be dropped one by "
                              "one; expected distill.prune_vocab: false")
    vocab = None
    if (folder / "vocab.txt").is_file():
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab = vocab[:-1]
    if backend is None and vocab is None:
        raise ConfigError(f"{KEY}: the tokenizer of {where} has no vocabulary file (vocab.txt or a WordPiece "
                          "tokenizer.json), so it cannot be pruned; expected distill.prune_vocab: false")
    return backend, vocab


def check_prunable(tokenizer, where: str) -> None:
    """Fail at once, before training, when `tokenizer` has no WordPiece vocabulary file to prune.

    Raises:
        ConfigError: one line naming `distill.prune_vocab` and the tokenizer.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        _wordpiece_files(Path(tmp), where)


def kept_ids(tokenizer, data: TokenDataset) -> np.ndarray:
    """The ids to keep: every id in `data`, the special tokens and [UNK], sorted."""
    used = np.unique(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in data.ids] or [np.zeros(0, np.int64)]))
    special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    return np.union1d(used, special)


def _pruned_tokenizer(tokenizer, keep: np.ndarray, where: str):
    """A tokenizer whose vocabulary is the tokens of `keep` (old ids), renumbered 0..K-1 in order."""
    old_to_new = {int(old): new for new, old in enumerate(keep)}
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        backend, vocab = _wordpiece_files(folder, where)
        tokens = [id_to_token[int(i)] for i in keep]
        if vocab is not None:
            (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
        if backend is not None:
            backend["model"]["vocab"] = {t: i for i, t in enumerate(tokens)}
            for added in backend.get("added_tokens") or []:
                added["id"] = old_to_new[int(added["id"])]
            _renumber_post_processor(backend.get("post_processor"), old_to_new)
            (folder / "tokenizer.json").write_text(json.dumps(backend, ensure_ascii=False), encoding="utf-8")
        config_file = folder / "tokenizer_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            decoder = config.get("added_tokens_decoder") or {}
            config["added_tokens_decoder"] = {str(old_to_new[int(k)]): v for k, v in decoder.items()
                                              if int(k) in old_to_new}
            config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        pruned = AutoTokenizer.from_pretrained(folder)
    if len(pruned) != len(keep):
        raise RuntimeError(f"pruned tokenizer of {where} has {len(pruned)} tokens, expected {len(keep)}")
    return pruned


def _renumber_post_processor(node: object, old_to_new: dict[int, int]) -> None:
    """The post-processor's special-token ids ([CLS] 101 -> its new id), wherever they are nested."""
    if isinstance(node, list):
        for item in node:
            _renumber_post_processor(item, old_to_new)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "ids" and isinstance(value, list):
                node[key] = [old_to_new.get(int(i), int(i)) for i in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:  # BertProcessing: [token, id]
                node[key] = [value[0], old_to_new.get(int(value[1]), int(value[1]))]
            else:
                _renumber_post_processor(value, old_to_new)


def _set_rows(model: PreTrainedModel, weight: torch.Tensor, pad_id: int | None) -> None:
    old = model.get_input_embeddings()
    table = torch.nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=pad_id if old.padding_idx is not None else None)
    with torch.no_grad():
        table.weight.copy_(weight)
    model.set_input_embeddings(table.to(old.weight.device))
    model.config.vocab_size = weight.shape[0]
    if pad_id is not None:
        model.config.pad_token_id = pad_id


def prune_vocabulary(model: PreTrainedModel, tokenizer, data: TokenDataset, where: str = "the student"
                     ) -> tuple[PreTrainedModel, object, dict]:
    """Keep only the tokens of `data` (plus special tokens) in `model`'s embeddings and `tokenizer`.

    Args:
        model: a trained transformer classifier (modified in place).
        tokenizer: its tokenizer (WordPiece, with a vocabulary file).
        data: the transfer set, tokenised by `tokenizer`.
        where: how an error names the tokenizer.

    Returns:
        (model, pruned tokenizer, info): info has `vocab_from`, `vocab_kept` and `params_removed`.

    Raises:
        ConfigError: the tokenizer has no WordPiece vocabulary file.
    """
    keep = kept_ids(tokenizer, data)
    pruned = _pruned_tokenizer(tokenizer, keep, where)
    weight = model.get_input_embeddings().weight.detach()
    before = int(weight.shape[0])
    _set_rows(model, weight[torch.from_numpy(keep)].clone(), pruned.pad_token_id)
    if getattr(model.config, "skip_token_ids", None) is not None:  # a static student's ids left out of its mean
        new_id = {int(old): new for new, old in enumerate(keep)}
        model.config.skip_token_ids = sorted(new_id[i] for i in model.config.skip_token_ids if i in new_id)
    model.config.pruned_vocab = {"from": before, "kept": int(len(keep))}  # config.json: how `unprune` knows
    info = {"vocab_from": before, "vocab_kept": int(len(keep)), "params_removed": (before - len(keep)) * weight.shape[1]}
    log.info("[distill] vocabulary pruned: %d of %d tokens kept (%d embedding parameters removed)",
             len(keep), before, info["params_removed"])
    return model, pruned, info


def is_pruned(model: PreTrainedModel) -> bool:
    """Whether a loaded student's vocabulary was pruned (config.json's `pruned_vocab`)."""
    return bool(getattr(model.config, "pruned_vocab", None))


def unprune(model: PreTrainedModel, tokenizer, teacher: PreTrainedModel, teacher_tokenizer) -> PreTrainedModel:
    """A pruned student back on the teacher's vocabulary: its rows where it kept the token, the teacher's elsewhere.

    Args:
        model: the pruned student (modified in place).
        tokenizer: its pruned tokenizer.
        teacher: the teacher whose vocabulary it was pruned from (same width).
        teacher_tokenizer: the teacher's tokenizer.
    """
    full = teacher.get_input_embeddings().weight.detach().clone().to(model.get_input_embeddings().weight.device)
    own = model.get_input_embeddings().weight.detach()
    teacher_vocab = teacher_tokenizer.get_vocab()
    for token, i in tokenizer.get_vocab().items():
        if token in teacher_vocab:
            full[teacher_vocab[token]] = own[i]
    _set_rows(model, full, teacher_tokenizer.pad_token_id)
    if getattr(model.config, "skip_token_ids", None) is not None:
        model.config.skip_token_ids = sorted(set(teacher_tokenizer.all_special_ids))
    model.config.pruned_vocab = None
    return model
