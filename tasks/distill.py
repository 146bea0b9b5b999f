"""distill: build the student from the teacher's layers and train it on the teacher's soft
targets, the labels and the teacher's hidden states.

Hidden-state alignment uses, by default (`distill.hidden_loss: pooled`), the mean-pooled state
of each mapped layer, cached with the logits: the teacher then never runs during training.
`tokens` aligns every token's state, DistilBERT's original choice, and runs the teacher online
for the hidden states each step, since per-token states are too large to cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.infra.splits import load_labels, load_split
from tasks.models.training import encode_split, loop_config
from tasks.infra.config import Config, DistillConfig
from tasks.core.cache import LogitCache, TeacherOutputs, cache_key, fingerprint_tokens, teacher_forward
from tasks.core.data import IGNORE_LABEL, Collator, TokenDataset, make_dataset
from tasks.core.dist import dist_info, is_main
from tasks.core.loop import StepFn, resolve_device, train
from tasks.core.precision import precision_name, resolve_precision
from tasks.core.loss import LossWeights, distillation_loss, mean_pool
from tasks.core.student import build_student, default_layer_map, num_layers
from tasks.infra.errors import ConfigError
from tasks.infra.embedded import read_embedded
from tasks.infra.tables import read_table
from tasks.infra.metrics import write_curve_csv
from tasks.models.loading import count_params, load_classifier, load_tokenizer, prepare_torch, save_model
from tasks.infra.storage import Paths, hash_dir, remove_stale_temps, stage_log, write_json
from tasks.models.static import is_static, static_from_teacher
from tasks.models.vocab import check_prunable, prune_vocabulary

log = logging.getLogger("kd")
ExtraLoss = Callable[[torch.Tensor, dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]


def student_layer_map(dc: DistillConfig, n_teacher: int) -> list[int]:
    """The configured layer map, or the default for `student_layers` (half the teacher by default)."""
    if dc.layer_map:
        if dc.student_layers and dc.student_layers != len(dc.layer_map):
            raise ConfigError(f"distill.layer_map has {len(dc.layer_map)} entries but distill.student_layers "
                              f"is {dc.student_layers}")
        if any(not 0 <= i < n_teacher for i in dc.layer_map) or sorted(set(dc.layer_map)) != dc.layer_map:
            raise ConfigError(f"distill.layer_map {dc.layer_map}: expected increasing indices in 0..{n_teacher - 1}")
        return list(dc.layer_map)
    n_student = dc.student_layers or max(1, n_teacher // 2)
    if not 1 <= n_student <= n_teacher:
        raise ConfigError(f"distill.student_layers: expected 1..{n_teacher} (the teacher's depth), got {n_student}")
    return default_layer_map(n_teacher, n_student)


def load_unlabeled(dc: DistillConfig, exclude: set[str], seed: int) -> list[str]:
    """Unlabelled transfer texts, minus any text of the labelled splits (no test leakage)."""
    source, path = dc.unlabeled.get("source"), dc.unlabeled.get("path")
    if not source:
        return []
    if not path:
        raise ConfigError("distill.unlabeled.path: required when distill.unlabeled.source is set")
    if source == "embedded":
        names = [p.strip() for p in path.split(",") if p.strip()]
        texts = pd.concat([read_embedded(n)["text"] for n in names]) if names else pd.Series([], dtype=str)
    else:
        texts = read_table(path, dc.unlabeled.get("text_column") or "text", None)["text"]
    texts = texts.dropna().astype(str)
    texts = texts[texts.str.strip().astype(bool) & ~texts.isin(exclude)].drop_duplicates()
    if dc.unlabeled_max_rows and len(texts) > dc.unlabeled_max_rows:
        texts = texts.sample(dc.unlabeled_max_rows, random_state=seed)
    return texts.tolist()


def unlabeled_texts(cfg: Config, paths: Paths) -> list[str]:
    """The configured unlabelled transfer texts, minus every text of the workspace's labelled splits."""
    exclude = set(pd.concat([load_split(paths, s)["text"] for s in ("train", "val", "test")]))
    return load_unlabeled(cfg.distill, exclude, cfg.base.seed)


def check_zero_shot_text(cfg: Config, unlabelled_rows: int) -> None:
    """A zero-shot teacher needs text without labels to teach from: train rows without a label, or
    `distill.unlabeled`. With neither, zero-shot mode is a mistake (the labels were there all along).

    Raises:
        ConfigError: one line naming `teacher.zero_shot` and where unlabelled text would come from.
    """
    if cfg.teacher.zero_shot is not None and unlabelled_rows == 0:
        raise ConfigError("teacher.zero_shot: no unlabelled text for the zero-shot teacher to label: every train row "
                          "has a label and distill.unlabeled.source is null; expected a train file without labels "
                          "(ingest.files.train) or distill.unlabeled text, or teacher.zero_shot: null")


def transfer_set(tokenizer, train: pd.DataFrame, unlabeled: list[str], max_length: int) -> TokenDataset:
    """The labelled training rows followed by the unlabelled texts (label IGNORE_LABEL)."""
    texts = train["text"].tolist() + unlabeled
    labels = np.concatenate([train["label"].to_numpy(), np.full(len(unlabeled), IGNORE_LABEL)])
    return make_dataset(tokenizer, texts, labels, max_length)


def loss_weights(dc: DistillConfig, static: bool = False) -> LossWeights:
    """The distillation loss's temperature and weights from the distill section (distill and retraining).

    A static student has no hidden states: its loss is the soft-target and hard-label terms alone.
    """
    return LossWeights(temperature=dc.temperature, alpha_kd=dc.alpha_kd, alpha_ce=dc.alpha_ce,
                       alpha_cos=0.0 if static else dc.alpha_cos)


def student_loop(dc: DistillConfig, static: bool) -> DistillConfig:
    """The section whose loop settings train the student: a static student's own lr and epochs replace
    the transformer ones (a head on a token table wants ~100x the learning rate)."""
    return dc.model_copy(update={"lr": dc.static_lr, "epochs": dc.static_epochs}) if static else dc


def make_step(teacher: torch.nn.Module, cached: TeacherOutputs | None, weights: LossWeights,
              layer_map: list[int], hidden_loss: str, extra: ExtraLoss | None = None,
              teacher_data: TokenDataset | None = None, teacher_pad: int = 0) -> StepFn:
    """The distillation step: student forward, teacher targets (cached or online), the loss.

    `extra(student_logits, batch) -> (loss, parts)` adds a term (retraining's learning without
    forgetting) computed on the same forward pass. `teacher_data`: the teacher's own tokens of the
    transfer set when the student tokenizes differently; an online teacher then reads the batch's
    rows (by index) from it, padded with `teacher_pad`.
    """
    need_hidden = weights.alpha_cos > 0
    online = cached is None or (need_hidden and hidden_loss == "tokens")
    collate = Collator(teacher_pad) if teacher_data is not None else None

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        mask = batch["attention_mask"]
        out = model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=need_hidden)
        t_pooled = t_states = None
        if online:
            t_batch = batch
            if collate is not None:
                rows = collate([teacher_data[i] for i in batch["index"].tolist()])
                t_batch = {k: v.to(mask.device) for k, v in rows.items()}
            t_logits, t_pooled, t_states = teacher_forward(teacher, t_batch, layer_map if need_hidden else None)
        else:
            t_logits, t_pooled = cached.take(batch["index"].cpu(), out.logits.device)
        s_hidden = t_hidden = token_mask = None
        if need_hidden:
            # Student layer i's output is hidden_states[i + 1]; its teacher is layer layer_map[i].
            s_states = out.hidden_states[1:]
            if hidden_loss == "tokens":
                s_hidden = torch.stack(list(s_states), dim=1)
                t_hidden = torch.stack([t_states[i + 1] for i in layer_map], dim=1)
                token_mask = mask
            else:
                s_hidden = torch.stack([mean_pool(h, mask) for h in s_states], dim=1)
                t_hidden = t_pooled
        loss, parts = distillation_loss(out.logits, t_logits, batch["labels"], weights, s_hidden, t_hidden, token_mask)
        if extra is not None:
            more, more_parts = extra(out.logits, batch)
            loss, parts = loss + more, {**parts, **more_parts}
        return loss, parts

    return step


def teacher_outputs(dc: DistillConfig, teacher_dir: Path, cache_root: Path, teacher: torch.nn.Module,
                    data: TokenDataset, pad_id: int, layer_map: list[int], device: torch.device,
                    stage: str = "distill", precision: str = "auto") -> tuple[TeacherOutputs | None, str, str | None]:
    """The teacher's outputs for the transfer set, from the cache or built into it once.

    The distill stage and each retraining cycle (its own cache inside the cycle's folder) both
    come here. Pooled hidden states are stored only when pooled alignment is on, then for every
    teacher layer: the entry's key does not depend on the layer map, and `select` hands back the
    mapped layers, so students of any depth and map share one teacher run.

    Args:
        dc: the distill section: `cache` (off: no cache), `alpha_cos`, `hidden_loss`, `eval_batch_size`.
        teacher_dir: the teacher's saved folder; its hash is part of the key.
        cache_root: the folder of cache entries.
        teacher: the loaded teacher, in eval mode on `device`.
        data: the transfer set.
        pad_id: the tokenizer's pad id.
        layer_map: the student's layer map.
        device: where the teacher runs.
        stage: the name in log lines.
        precision: base.precision; the resolved one is part of the key.

    Returns:
        (outputs, 'hit' | 'miss' | 'off', key); (None, 'off', None) when `dc.cache` is off.
    """
    if not dc.cache:
        return None, "off", None
    pooled_layers = list(range(num_layers(teacher))) if dc.alpha_cos > 0 and dc.hidden_loss == "pooled" else None
    dtype = resolve_precision(precision, device)
    key = cache_key(hash_dir(teacher_dir), fingerprint_tokens(data), pooled_layers, precision_name(dtype))
    cache = LogitCache(cache_root, key)
    if cache.exists():
        log.info("[%s] teacher-output cache hit: %s", stage, key)
        outputs, state = cache.load(), "hit"
    else:
        log.info("[%s] teacher-output cache miss: %s; running the teacher once over %d rows", stage, key, len(data))
        outputs, state = cache.build(teacher, data, pad_id, dc.eval_batch_size, device, pooled_layers,
                                     dtype), "miss"
    return (outputs.select(layer_map) if pooled_layers else outputs), state, key


def make_student(dc: DistillConfig, teacher: torch.nn.Module, names: list[str], tokenizer=None,
                 device: torch.device | None = None, table_cache: tuple[Path, str] | None = None
                 ) -> tuple[torch.nn.Module, list[int]]:
    """The student and its layer map: teacher layers by the map, a separately named pretrained model,
    or (`distill.student: static`) model2vec's static table of the teacher with a new head (no layers: []).

    For a pretrained student the map only pairs layers for hidden-state alignment; its length must
    be the student's own depth. Its width and vocabulary may differ from the teacher's (see
    `student_tokenizer` and `hidden_term`).
    """
    if dc.student == "static":
        return static_from_teacher(teacher, tokenizer, names, dc.static_dims, dc.static_hidden,
                                   dc.static_train_embeddings, device, table_cache), []
    n_teacher = num_layers(teacher)
    if not dc.student_model:
        layer_map = student_layer_map(dc, n_teacher)
        return build_student(teacher, layer_map), layer_map
    student, _ = load_classifier(dc.student_model, names, key="distill.student_model")
    n_student = num_layers(student)
    if dc.student_layers and dc.student_layers != n_student:
        raise ConfigError(f"distill.student_layers={dc.student_layers} but distill.student_model has {n_student} layers")
    if n_student > n_teacher:
        raise ConfigError(f"distill.student_model: {n_student} layers, more than the teacher's {n_teacher}")
    layer_map = student_layer_map(dc.model_copy(update={"student_layers": n_student}), n_teacher)
    return student, layer_map


def student_tokenizer(dc: DistillConfig, teacher_tokenizer):
    """The student's tokenizer: its own for a pretrained student (soft targets are per text, so each
    model reads the text its own way), else the teacher's."""
    return load_tokenizer(dc.student_model, key="distill.student_model") if dc.student_model else teacher_tokenizer


def hidden_term(dc: DistillConfig, teacher: torch.nn.Module, student: torch.nn.Module,
                same_tokens: bool) -> tuple[DistillConfig, str]:
    """The hidden-state term as this pair allows it: (dc, with alpha_cos 0 when the term is off; why).

    It is off when the widths differ (no projection is learned: its weights would be thrown away with
    the teacher), and per-token alignment is off when the student reads other tokens than the teacher.
    """
    t, s = teacher.config.hidden_size, student.config.hidden_size
    if dc.alpha_cos == 0:
        return dc, "off (distill.alpha_cos is 0)"
    if s != t:
        why = f"off: the student's width {s} differs from the teacher's {t} (no projection)"
    elif not same_tokens and dc.hidden_loss == "tokens":
        why = "off: per-token alignment needs the teacher's tokens, and the student has its own tokenizer"
    else:
        return dc, f"on ({dc.hidden_loss} states, alpha_cos {dc.alpha_cos})"
    if dc.alpha_kd + dc.alpha_ce == 0:
        raise ConfigError(f"distill.alpha_cos is the only loss weight, but the hidden-state term is {why}; "
                          "expected alpha_kd or alpha_ce > 0")
    return dc.model_copy(update={"alpha_cos": 0.0}), why


def distill(cfg: Config, paths: Paths, resume: bool = False, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Run the distill stage. Writes models/distilled/, reports/distill.json and its curve.

    `on_epoch` sees each epoch's record (tasks.core.loop.train); the sweep prunes trials with it.
    """
    dc = cfg.distill
    prepare_torch(cfg.base.threads, cfg.base.seed)
    with stage_log("distill") as info:
        if is_main():
            remove_stale_temps(paths.distilled)  # a killed run's half-written (or moved-aside) model copies
        names = load_labels(paths)
        frames = {s: load_split(paths, s) for s in ("train", "val")}
        tokenizer = load_tokenizer(str(paths.teacher), key="teacher (models/teacher)")
        teacher, _ = load_classifier(str(paths.teacher), names, key="teacher (models/teacher)")
        device = resolve_device(cfg.base.device)
        teacher.to(device).eval().requires_grad_(False)
        n_teacher = num_layers(teacher)
        table_cache = (paths.cache, hash_dir(paths.teacher)) if dc.cache and dc.student == "static" else None
        student, layer_map = make_student(dc, teacher, names, tokenizer, device, table_cache)
        static = is_static(student)
        s_tokenizer = student_tokenizer(dc, tokenizer)
        where = "distill.student_model" if dc.student_model else "the teacher (models/teacher)"
        if dc.prune_vocab:  # before any training: a tokenizer that cannot be pruned is one line, at once
            check_prunable(s_tokenizer, where)
        unlabeled = unlabeled_texts(cfg, paths)
        # Train rows without a label (zero-shot mode) are transfer text too: IGNORE_LABEL, soft targets only.
        train_unlabelled = int((frames["train"]["label"] == IGNORE_LABEL).sum())
        check_zero_shot_text(cfg, train_unlabelled + len(unlabeled))
        # The teacher's tokens key the cache; the student trains on its own (the same ones unless it is
        # a pretrained model with another tokenizer). Row i is the same text in both.
        data = transfer_set(tokenizer, frames["train"], unlabeled, cfg.base.max_length)
        s_data = data if s_tokenizer is tokenizer else transfer_set(s_tokenizer, frames["train"], unlabeled,
                                                                    cfg.base.max_length)
        same_tokens = s_data is data or fingerprint_tokens(s_data) == fingerprint_tokens(data)
        dc, hidden = ((dc, "off (a static student has no layers)") if static else
                      hidden_term(dc, teacher, student, same_tokens))
        log.info("[distill] student tokens: %s; hidden-state term %s", "the teacher's" if same_tokens else
                 f"its own ({dc.student_model}, vocabulary {len(s_tokenizer)})", hidden)
        val = encode_split(s_tokenizer, frames["val"], cfg.base.max_length)
        start = time.perf_counter()
        cached, cache_state, key = teacher_outputs(dc, paths.teacher, paths.cache, teacher, data, tokenizer.pad_token_id,
                                                   layer_map, device, precision=cfg.base.precision)
        cache_seconds = time.perf_counter() - start
        step = make_step(teacher, cached, loss_weights(dc, static), layer_map, dc.hidden_loss,
                         teacher_data=None if same_tokens else data, teacher_pad=tokenizer.pad_token_id)
        result = train(student, s_data, val, step, loop_config(student_loop(dc, static), cfg.base, "distill",
                                                               cfg.evaluate.metric),
                       s_tokenizer.pad_token_id,
                       paths.checkpoints("distill"), resume=resume, on_epoch=on_epoch)
        vocab = None
        if dc.prune_vocab:  # after training: every transfer text tokenises as before, so nothing learned is lost
            student, s_tokenizer, vocab = prune_vocabulary(student.cpu(), s_tokenizer, s_data, where)
        if is_main():  # under DDP every rank holds the same weights; one writes
            save_model(student.cpu(), s_tokenizer, paths.distilled)
        epochs_run = max(1, len(result.history))
        # A pretrained student keeps its own layers: its map only pairs layers for the hidden-state term,
        # so with that term off it pairs nothing and is not reported.
        used_map = None if dc.student_model and dc.alpha_cos == 0 else layer_map
        report = {
            "student": dc.student, "static_dims": student.config.hidden_size if static else None, "vocab": vocab,
            "teacher_layers": n_teacher, "student_layers": num_layers(student), "layer_map": used_map,
            "params": count_params(student), "teacher_params": count_params(teacher),
            "transfer_rows": {"labelled": len(frames["train"]) - train_unlabelled,
                              "unlabelled": len(unlabeled) + train_unlabelled},
            "transfer_tokens": s_data.real_tokens, "student_tokenizer": "teacher" if same_tokens else "own",
            "hidden_term": hidden,
            "cache": cache_state, "cache_key": key, "cache_seconds": round(cache_seconds, 2),
            f"best_val_{cfg.evaluate.metric}": result.best_score, "stopped_early": result.stopped_early,
            "train_seconds": round(result.seconds, 2),
            "samples_per_s": round(len(data) * epochs_run / max(result.seconds, 1e-9), 1),
            "tokens_per_s": round(s_data.real_tokens * epochs_run / max(result.seconds, 1e-9), 1),
            "history": result.history,
        }
        report["processes"] = dist_info()[1]
        if is_main():
            write_json(paths.reports / "distill.json", report)
            write_curve_csv(paths.plots / "distill_curve.csv", result.history or [{"epoch": 0}])
        info["read"] += [paths.processed, paths.teacher]
        info["wrote"] += [paths.distilled, paths.reports / "distill.json"]
        kind = (f"static student ({report['static_dims']} dims)" if static else
                f"{report['student_layers']}-layer student ({dc.student_model})" if used_map is None else
                f"{report['student_layers']}-layer student (map {layer_map})")
        log.info("[distill] %s, best val %s %.4f", kind, cfg.evaluate.metric, result.best_score)
    return report
