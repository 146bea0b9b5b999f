"""The zero-shot teacher: a sentence embedder that classifies by cosine similarity to label descriptions.

With `teacher.zero_shot: {positive: "a positive review", negative: "a negative review"}` the
teacher stage does not fine-tune. It builds a `ZeroShotClassifier`: the base model's encoder, the
mean of its last hidden states over real tokens (the pooling the sentence embedder was trained
with), and a head whose row for each label is that label's description embedded the same way:

    logits[b, c] = SCALE · cos(mean_pool(h_b), mean_pool(h_description_c))

It is an ordinary sequence classifier to the rest of the pipeline: saved as `models/teacher/`
(safetensors, tokenizer, a config.json of model type `kd-zero-shot`), it loads through
`load_classifier` (the Auto classes know the type once this module is imported, which
`tasks.models.loading` does), the distill stage's cache, evaluate and promote use it unchanged,
and the student built from its layers inherits the description head as its starting point. A
retraining cycle fine-tunes it like any teacher once labelled batches arrive: the head stays a
cosine classifier, now trained.

Why a fixed SCALE of 20 rather than CLIP's 100 or a fitted one: with no labelled row there is
nothing to fit a temperature on, and 20 is the scale the default embedder (all-MiniLM-L6-v2, and
most sentence-transformers models) was contrastively trained with (MultipleNegativesRankingLoss,
scale 20): the softmax of 20·cos is the distribution its training calibrated. Cosine gaps between
a text's best and second-best description are typically 0.02 to 0.15, so 20 gives soft targets
from about 0.6 to 0.95: graded, usable for distillation. At 100 nearly every target would be
one-hot, and the student would learn the teacher's mistakes as confidently as its hits.

Centring (`teacher.zero_shot_centre`, on by default): an embedder rarely sits midway between two
descriptions. On the movie snippets "a positive movie review" is the nearer description for 79%
of the test split's reviews, half of which are negative. The head's bias is set to
minus each label's mean logit over the train split's texts (their labels, if any, are never read),
so that no description is preferred on average over the data the teacher will label: the
"contextual calibration" of Zhao et al. (2021), with the task's own unlabelled texts as the
context. It assumes no class is rare; for a strongly imbalanced task it over-predicts the rare
class (turn it off). The teacher report gives the uncentred scores beside the centred ones.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from tasks.core.data import TokenDataset
from tasks.core.loss import mean_pool
from tasks.core.predict import predict_logits
from tasks.infra.errors import ConfigError

MODEL_TYPE = "kd-zero-shot"
SCALE = 20.0  # see the module docstring
KEY = "teacher.zero_shot"
MIRRORED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_position_embeddings",
            "pad_token_id")


class ZeroShotConfig(PretrainedConfig):
    """A zero-shot classifier's config: the encoder's own config (as a dict), the scale and the descriptions.

    The encoder's `MIRRORED` keys are copied to the top level, where the pipeline reads them (student
    depth, width checks, position limit, the ONNX exporter's attention fusion);
    the top-level `num_hidden_layers` wins over the encoder's, so a student built by changing it
    (tasks/core/student.py) gets an encoder of that depth.
    """

    model_type = MODEL_TYPE

    def __init__(self, encoder: dict | None = None, scale: float = SCALE, descriptions: dict | None = None,
                 **kwargs):
        self.encoder = dict(encoder or {})
        self.scale = float(scale)
        self.descriptions = dict(descriptions or {})
        for name in MIRRORED:
            if name in self.encoder:
                kwargs.setdefault(name, self.encoder[name])
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        """The encoder's config, at this config's depth."""
        values = {k: v for k, v in self.encoder.items() if k != "model_type"}
        values["num_hidden_layers"] = self.num_hidden_layers
        return AutoConfig.for_model(self.encoder["model_type"], **values)


class ZeroShotClassifier(PreTrainedModel):
    """Mean-pooled encoder states, classified by scaled cosine similarity to one weight row per label,
    plus a per-label bias (zero until `centre` sets it).

    forward(input_ids [B, L], attention_mask [B, L]) -> logits [B, C] (and the encoder's hidden
    states when asked: the distiller aligns the student's layers with them).
    """

    config_class = ZeroShotConfig
    base_model_prefix = "encoder"

    def __init__(self, config: ZeroShotConfig):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config())
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # Weights come from the base model and the descriptions (or a saved folder); this is only
        # what a brand-new module would get.
        if isinstance(module, torch.nn.Linear):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, torch.nn.Embedding):
            module.weight.data.normal_(0.0, 0.02)
        elif isinstance(module, torch.nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length sentence embeddings [B, H]: the mean of the last hidden states over real tokens."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask).float(), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                **kwargs) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states)
        pooled = F.normalize(mean_pool(out.last_hidden_state, attention_mask).float(), dim=-1)
        weight = F.normalize(self.classifier.weight.float(), dim=-1)
        logits = self.config.scale * pooled @ weight.T + self.classifier.bias.float()
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


AutoConfig.register(MODEL_TYPE, ZeroShotConfig)
AutoModelForSequenceClassification.register(ZeroShotConfig, ZeroShotClassifier)


def check_descriptions(descriptions: dict[str, str], labels: list[str]) -> None:
    """The descriptions must name exactly the data's labels, each with a non-blank text.

    Args:
        descriptions: `teacher.zero_shot`, label -> description.
        labels: the label names ingest recorded (summary.json), in id order.

    Raises:
        ConfigError: one line naming the key: a label without a description, a description of a
            label the data does not have, or a blank description.
    """
    known = ", ".join(labels)
    for name, text in descriptions.items():
        if name not in labels:
            raise ConfigError(f"{KEY}.{name}: not a label of the data (labels: {known}); "
                              "expected one description per label")
        if not str(text).strip():
            raise ConfigError(f"{KEY}.{name}: the description is empty; expected a phrase such as "
                              f"'a text about {name}'")
    missing = [name for name in labels if name not in descriptions]
    if missing:
        raise ConfigError(f"{KEY}: label '{missing[0]}' has no description (labels: {known}); "
                          f"expected one description per label, e.g. {KEY}.{missing[0]}: 'a text about {missing[0]}'")


@torch.no_grad()
def zero_shot_classifier(base: PreTrainedModel, tokenizer, labels: list[str], descriptions: dict[str, str],
                         max_length: int, scale: float = SCALE) -> ZeroShotClassifier:
    """A zero-shot classifier from a base encoder: its head holds each label's embedded description.

    Args:
        base: the base model without a head (`AutoModel`, or a classifier's `base_model`), e.g. the
            sentence embedder.
        tokenizer: its tokenizer.
        labels: the label names in id order.
        descriptions: label -> description (checked by `check_descriptions`).
        max_length: tokens per description (base.max_length).
        scale: the logit scale (see the module docstring).

    Returns:
        The classifier, in eval mode, on the CPU.
    """
    check_descriptions(descriptions, labels)
    # The encoder's own config, less what belongs to a classifier head (this one's labels are set below).
    encoder = {k: v for k, v in base.config.to_dict().items()
               if k not in ("id2label", "label2id", "num_labels", "architectures", "problem_type")}
    config = ZeroShotConfig(encoder=encoder, scale=scale, descriptions={n: descriptions[n] for n in labels},
                            num_labels=len(labels), id2label=dict(enumerate(labels)),
                            label2id={n: i for i, n in enumerate(labels)})
    model = ZeroShotClassifier(config)
    model.encoder.load_state_dict(base.state_dict())
    model.eval()
    enc = tokenizer([descriptions[n] for n in labels], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt", return_token_type_ids=False)
    model.classifier.weight.copy_(model.embed(enc["input_ids"], enc["attention_mask"]))
    model.classifier.bias.zero_()
    return model


def centre(model: ZeroShotClassifier, texts: TokenDataset, pad_id: int, batch_size: int = 128,
           device: torch.device | None = None) -> np.ndarray:
    """Set the head's bias to minus each label's mean logit over `texts` (see the module docstring).

    Args:
        model: a zero-shot classifier, on `device`.
        texts: the texts to centre on (the train split's); their labels are not read.
        pad_id: the tokenizer's pad id.
        batch_size: rows per forward pass.
        device: where the model runs.

    Returns:
        The bias, float32 [C].
    """
    with torch.no_grad():
        model.classifier.bias.zero_()
    logits = predict_logits(model, texts, pad_id, batch_size, device, progress="zero-shot centring")
    bias = -logits.mean(0).astype(np.float32)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.from_numpy(bias))
    model.config.centred_on = len(texts)
    return bias


def is_zero_shot(model: torch.nn.Module) -> bool:
    """Whether a loaded classifier is a zero-shot one."""
    return isinstance(model, ZeroShotClassifier)
