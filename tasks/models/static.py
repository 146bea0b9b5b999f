"""The static-embedding student: one vector per token, averaged, then a small classifier head.

No attention and no layers: a text's logits are `head(mean of its tokens' rows)`, a gather and a
mean, so it answers hundreds of times faster than the teacher on a CPU. The table comes from the
teacher itself through model2vec's distillation (`model2vec.distill.distill_from_model`): every
token of the teacher's vocabulary is run through the teacher's encoder alone, its output
mean-pooled, the table reduced by PCA to `distill.static_dims` and weighted by token frequency
(model2vec's SIF/Zipf weighting). Then the head (and, with `distill.static_train_embeddings`, the
table) is trained by the distill stage's own loop and loss on the teacher's cached soft targets plus
the hard labels (`alpha_kd`, `alpha_ce`, `temperature`; there are no hidden states to align).

Which teacher: the pipeline's own `models/teacher/`, the model fine-tuned on the task (or the
zero-shot classifier), not the base model it started from. Its encoder's token vectors already
separate the task's classes, it is what every other student learns from (one teacher, one cache,
one lineage for retraining), and it works for any teacher, also one named by a hub id or folder that
is no sentence embedder.

The student keeps the teacher's tokenizer and token ids (model2vec's rows are mapped back onto them
by token string), so it reads the same tokenised inputs as every other model here: the distill
stage's transfer set and teacher-output cache, evaluate, promote, `kdistill predict`, score, the API
and drift all load it as a sequence classifier of model type `kd-static` (registered with the
Auto classes on import, as tasks/models/zero_shot.py registers its type) and call
`model(input_ids=..., attention_mask=...)`. Special tokens ([CLS], [SEP], [PAD]) are left out of
the mean, as model2vec leaves them out. It exports to ONNX (a Gather, a masked mean and the head:
tasks/production/export.py), which is how it is served fastest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from tasks.core.loss import mean_pool
from tasks.infra.errors import ConfigError

log = logging.getLogger("kd")

MODEL_TYPE = "kd-static"


class StaticConfig(PretrainedConfig):
    """A static student's config: table size, head shape, the token ids left out of the mean, provenance."""

    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 2, hidden_size: int = 2, head_hidden: int = 0,
                 skip_token_ids: list[int] | None = None, normalize: bool = False, pca_dims: int | None = None,
                 max_position_embeddings: int = 512, **kwargs):
        self.vocab_size, self.hidden_size, self.head_hidden = int(vocab_size), int(hidden_size), int(head_hidden)
        self.skip_token_ids = [int(i) for i in skip_token_ids or []]
        self.normalize, self.pca_dims = bool(normalize), pca_dims
        self.max_position_embeddings = int(max_position_embeddings)
        kwargs.setdefault("num_hidden_layers", 0)  # read by reports and the sweep: no transformer layers
        super().__init__(**kwargs)


class StaticClassifier(PreTrainedModel):
    """logits = head(mean over the non-special tokens of embeddings[input_ids]).

    forward(input_ids [B, L], attention_mask [B, L]) -> logits [B, C]; with `output_hidden_states`
    the hidden states are the token vectors (special tokens zeroed), so drift's mean pooling of the
    "last hidden state" is this model's own sentence embedding.
    """

    config_class = StaticConfig
    base_model_prefix = "static"
    main_input_name = "input_ids"

    def __init__(self, config: StaticConfig):
        super().__init__(config)
        self.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        if config.head_hidden > 0:
            self.classifier = torch.nn.Sequential(torch.nn.Linear(config.hidden_size, config.head_hidden),
                                                  torch.nn.ReLU(), torch.nn.Linear(config.head_hidden, config.num_labels))
        else:
            self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # The table comes from model2vec (or a saved folder); only a new head starts from these.
        if isinstance(module, torch.nn.Linear):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, torch.nn.Embedding):
            module.weight.data.normal_(0.0, 0.02)

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.embeddings = value

    def token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """1.0 where a real, non-special token stands, else 0.0 [B, L] (comparisons, so it exports to ONNX)."""
        keep = attention_mask.bool()
        for token in self.config.skip_token_ids:
            keep = keep & (input_ids != token)
        return keep.to(self.embeddings.weight.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                **kwargs) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = self.token_mask(input_ids, attention_mask)
        vectors = self.embeddings(input_ids)
        pooled = mean_pool(vectors, mask)  # a text of special tokens only: the zero vector
        if self.config.normalize:
            pooled = F.normalize(pooled, dim=-1)
        logits = self.classifier(pooled)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=(vectors * mask[..., None],) if output_hidden_states else None)


AutoConfig.register(MODEL_TYPE, StaticConfig)
AutoModelForSequenceClassification.register(StaticConfig, StaticClassifier)


def is_static(model: torch.nn.Module | PretrainedConfig | dict | None) -> bool:
    """Whether a model (or its config, or a config.json's content) is a static student."""
    if isinstance(model, dict):
        return model.get("model_type") == MODEL_TYPE
    config = model if isinstance(model, PretrainedConfig) else getattr(model, "config", None)
    return getattr(config, "model_type", None) == MODEL_TYPE


def teacher_width(config: PretrainedConfig | dict) -> int | None:
    """The hidden size a teacher's token vectors have (None when its config does not say)."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    width = get("hidden_size") or get("dim") or get("d_model")
    return int(width) if isinstance(width, int) else None


def check_dims(dims: int, width: int | None, where: str) -> None:
    """`distill.static_dims` must not exceed the teacher's width (PCA cannot add dimensions).

    Raises:
        ConfigError: one line naming the key, the value and the teacher's width.
    """
    if width is not None and dims > width:
        raise ConfigError(f"distill.static_dims={dims}: above the width of {where} ({width}, hidden_size in its "
                          f"config.json); PCA cannot add dimensions: expected at most {width}")


def model2vec_table(encoder: torch.nn.Module, tokenizer, dims: int, device: torch.device | None = None
                    ) -> np.ndarray:
    """model2vec's static table of `encoder`, one row per id of `tokenizer`'s vocabulary [V, dims].

    `model2vec.distill.distill_from_model` runs offline on the loaded encoder (nothing is fetched).
    Its output vocabulary can differ from the tokenizer's (it drops tokens such as [unused0]); rows
    are mapped back by token string, and a token model2vec dropped gets the zero vector.

    Args:
        encoder: the teacher's encoder (`teacher.base_model`), on the CPU or `device`.
        tokenizer: the teacher's tokenizer (a fast, tokenizers-backed one).
        dims: PCA dimensions (`distill.static_dims`), at most the encoder's width.
        device: where model2vec runs the encoder; None: the encoder's device.
    """
    from model2vec.distill import distill_from_model

    was_training = encoder.training
    device = device or next(encoder.parameters()).device
    width = teacher_width(encoder.config)
    # model2vec asks the hub for the model card of a `name_or_path` that is no local folder; a loaded
    # model always has its folder there, but a model built in code has "": name the current folder.
    if not os.path.isdir(getattr(encoder, "name_or_path", "") or ""):
        encoder.name_or_path = "."
    # It reshapes a deep copy of the encoder, never the teacher itself; float32 rows, not its float16
    # default, since the table is trained further.
    static = distill_from_model(model=encoder.eval(), tokenizer=tokenizer, device=str(device),
                                pca_dims=None if dims == width else dims, quantize_to="float32")
    encoder.train(was_training)
    m2v_vocab = static.tokenizer.get_vocab()
    vectors = np.asarray(static.embedding, dtype=np.float32)
    table = np.zeros((len(tokenizer), vectors.shape[1]), dtype=np.float32)
    mapped = 0
    for token, i in tokenizer.get_vocab().items():
        row = m2v_vocab.get(token)
        if row is not None and row < len(vectors) and i < len(table):
            table[i] = vectors[row]
            mapped += 1
    log.info("[distill] model2vec table: %d of %d teacher tokens mapped, %d dims", mapped, len(table), table.shape[1])
    return table


def build_static(table: np.ndarray, tokenizer, labels: list[str], head_hidden: int = 0,
                 max_position_embeddings: int = 512, pca_dims: int | None = None,
                 normalize: bool = True) -> StaticClassifier:
    """A static classifier over `table` [V, D] with a new head for `labels`, in train mode.

    Args:
        table: one row per token id of `tokenizer` (from `model2vec_table`, or any [V, D] table).
        tokenizer: whose ids the table's rows follow; its special tokens are left out of the mean.
        labels: label names in id order.
        head_hidden: hidden units of an MLP head; 0: a linear head.
        max_position_embeddings: the teacher's, recorded so the position checks of base.max_length agree.
        pca_dims: recorded for provenance.
        normalize: scale the mean to unit length before the head, as model2vec's encode does.
    """
    config = StaticConfig(vocab_size=table.shape[0], hidden_size=table.shape[1], head_hidden=head_hidden,
                          skip_token_ids=sorted(set(tokenizer.all_special_ids)), pca_dims=pca_dims, normalize=normalize,
                          max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
                          num_labels=len(labels), id2label=dict(enumerate(labels)),
                          label2id={n: i for i, n in enumerate(labels)})
    model = StaticClassifier(config)
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)))
    return model.train()


def static_from_teacher(teacher: PreTrainedModel, tokenizer, labels: list[str], dims: int, head_hidden: int,
                        train_embeddings: bool, device: torch.device | None = None,
                        cache: tuple[Path, str] | None = None) -> StaticClassifier:
    """The static student of a loaded teacher classifier: model2vec's table of its encoder, a new head.

    Args:
        cache: (folder, the teacher folder's hash): the table is kept there as
            `static-<sha256(teacher hash, dims, model2vec version)[:24]>.npy`, so the sweep's static
            trials of one width run model2vec once (minutes for a 30k-token vocabulary on a CPU).

    Raises:
        ConfigError: `dims` above the teacher's width.
    """
    width = teacher_width(teacher.config)
    check_dims(dims, width, "the teacher (models/teacher)")
    path = None
    if cache is not None:
        import model2vec

        key = hashlib.sha256(json.dumps([cache[1], dims, model2vec.__version__]).encode()).hexdigest()[:24]
        path = Path(cache[0]) / f"static-{key}.npy"
    if path is not None and path.is_file():
        table = np.load(path)
        log.info("[distill] model2vec table from the cache: %s", path)
    else:
        table = model2vec_table(teacher.base_model, tokenizer, dims, device)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
            np.save(tmp, table)
            os.replace(tmp, path)  # whole or absent: parallel trials may write it at once
    model = build_static(table, tokenizer, labels, head_hidden,
                         getattr(teacher.config, "max_position_embeddings", 512) or 512, dims)
    model.embeddings.weight.requires_grad_(train_embeddings)
    return model
