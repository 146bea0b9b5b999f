"""retrain: one continual-learning cycle. The student learns the new data without forgetting the old,
and replaces production only when it is measurably better.

1. Gather: the new labelled batches in `retrain.labelled` (files no promoted cycle has learned yet, and
   complete: settled as score's files are, `score.settle_seconds`), each validated with the new-batch
   suite (a bad one is quarantined with its reason and the others go on), and the unlabelled
   production-log text since production's model was trained.
   The new labelled rows are split into new train / val / test (stratified, seeded).
2. Teacher first: the current teacher (of production's lineage) is fine-tuned on the new labelled
   rows plus a replay sample of the old ones, and evaluated on the old and the new test split. It
   passes when it gained on the new split and lost at most `teacher_max_forgetting` on the old one;
   otherwise the cycle ends there (a weak teacher would teach its mistakes).
3. Transfer set: new labelled rows + a replay sample of old rows (`replay_ratio`) + the production
   text the updated teacher labels with confidence >= `min_teacher_confidence` (soft targets only).
   With `pseudo_ablation`, a second student is trained without that text on the same cycle, and the
   one with the better validation score becomes the challenger; the report shows both.
4. Warm start from the production student; `alpha_lwf` adds learning without forgetting: the KL
   to the previous student's outputs on the replayed old rows.
5. Evaluate champion (production), challenger and both teachers on the old test split (the base
   test split plus the new test splits of the cycles production learned from) and the new one.
6. Champion / challenger: promote only when the challenger gains >= `min_gain` on the new split and
   the gain is significant (its paired interval at `evaluate.confidence` lies above zero; otherwise
   the cycle waits for more labels and says how many new test rows would show it), forgets <=
   `max_forgetting` on the old one and passes the retention gate. Scores are in `evaluate.metric`. A refused, failed or
   crashed cycle never touches production or the registry's `production`.

Every cycle is version N of the registry, promoted or not. N is allocated when the cycle is written
(tasks/lifecycle/registry.py, under the registry's write lock), so a pipeline promote landing meanwhile gets its
own number: the cycle trains in temporary folders, which become its data snapshot (`data/cycles/vN/`)
and its models, checkpoints and report (`models/cycles/vN/`) under that lock. Then DVC records them
(tasks/lifecycle/versions.py): `dvc add`, `dvc commit promote`, `dvc push`. This module decides; the registry writes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.infra.splits import load_labels, load_split
from tasks.models.training import encode_split, loop_config, predict_labels, predict_probs, supervised_step
from tasks.infra.config import Config, TrainConfig
from tasks.core.loop import LoopConfig, resolve_device, train
from tasks.core.loss import soft_target_kl
from tasks.core.predict import predict_logits
from tasks.core.student import build_student, num_layers
from tasks.distill import loss_weights, make_step, student_layer_map, teacher_outputs, transfer_set
from tasks.models.static import is_static, static_from_teacher
from tasks.models.vocab import is_pruned, prune_vocabulary, unprune
from tasks.infra.errors import ConfigError, DataError
from tasks.models.loading import load_classifier, load_tokenizer, prepare_torch, save_model
from tasks.infra.registry_view import lineage, production_dir, registry_path, run_source
from tasks.lifecycle.registry import Decision, Transaction, cycle_lock, ensure_archived, new_entry, now, transaction
from tasks.infra.stats import Comparison, metric_value, paired_comparison
from tasks.infra.storage import (
    Paths,
    atomic_path,
    hash_dir,
    hash_file,
    read_json,
    stage_log,
    write_json,
    write_parquet,
)
from tasks.lifecycle.versions import record

log = logging.getLogger("kd")

TRIGGERS = ("manual", "drift", "schedule")


def cycle_dirs(paths: Paths, version: int | str) -> tuple[Path, Path]:
    """(data/cycles/v<N>, models/cycles/v<N>): a cycle's data snapshot, and its models and report."""
    return paths.root / "data" / "cycles" / f"v{version}", paths.root / "models" / "cycles" / f"v{version}"


# ----------------------------------------------------------------------------------------- gather

def gather_labelled(cfg: Config, paths: Paths, names: list[str], tokenizer, learned: set[str]) -> tuple[pd.DataFrame, list[dict]]:
    """The new labelled batches, validated; bad ones are quarantined (moved aside with a reason).

    Only complete files are read, as score takes its files (`score.settle_seconds`, tasks.infra.dropfolder
    .settled): one still being written is left for the next cycle, never learned from or quarantined half-written.

    Returns:
        (rows: text, label (class id), source file; one record per file: file, sha256, rows, status
        used | quarantined | pending (still being written) | gone (renamed or deleted meanwhile)).
    """
    from tasks.infra.dropfolder import change_since, check_own_folder, new_files, outside_link, quarantine, settled
    from tasks.infra.prodlog import production_log_dir
    from tasks.infra.tables import label_namer, read_table
    from tasks.quality.doors import validate_batch

    folder = paths.root / cfg.retrain.labelled
    check_own_folder("retrain.labelled", folder, production_log_dir(paths))
    frames, batches = [], []
    files, pending = settled(new_files(folder), cfg.score.settle_seconds)
    batches += [{"file": path.name, "status": "pending"} for path in pending]
    for path, seen in files.items():
        if (why := outside_link(path, folder)) is not None:  # the link is set aside, its target never read
            quarantine(path, folder, [why])
            batches.append({"file": path.name, "status": "quarantined", "errors": [why]})
            continue
        sha, frame, error = None, None, None
        try:
            sha = hash_file(path)
            if sha not in learned:
                frame = read_table(path, cfg.score.text_column, cfg.score.label_column)
        except FileNotFoundError:
            pass  # renamed or deleted meanwhile: change_since says so
        except DataError as err:
            error = str(err)
        # Written to (or gone) since it settled, or while it was hashed and read: what was read is not the file.
        if (status := change_since(path, seen)) is not None:
            batches.append({"file": path.name, "status": status})
            continue
        if sha in learned:
            continue
        if error is not None:
            quarantine(path, folder, [error])
            batches.append({"file": path.name, "sha256": sha, "status": "quarantined", "errors": [error]})
            continue
        frame = frame.assign(label=frame["label"].map(label_namer(names)))
        result = validate_batch(frame, cfg, names, str(path), tokenizer=tokenizer)
        if not result.ok:
            quarantine(path, folder, result.errors, result.to_dict())
            batches.append({"file": path.name, "sha256": sha, "status": "quarantined", "errors": result.errors})
            continue
        ids = frame["label"].map({n: i for i, n in enumerate(names)})
        if ids.isna().any():  # validation passed a label no class has: set the batch aside, never a traceback
            row = int(ids.isna().to_numpy().argmax())
            errors = [f"row {row + 1}: label {frame['label'].iloc[row]!r} is not one of {names}"]
            quarantine(path, folder, errors)
            batches.append({"file": path.name, "sha256": sha, "status": "quarantined", "errors": errors})
            continue
        ids = ids.astype("int64")
        frames.append(pd.DataFrame({"text": frame["text"].astype(str), "label": ids, "source": path.name}))
        batches.append({"file": path.name, "sha256": sha, "status": "used", "rows": len(frame)})
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["text", "label", "source"])
    return rows.drop_duplicates("text").reset_index(drop=True), batches


def split_new(rows: pd.DataFrame, val_size: float, test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """New labelled rows → train / val / test, stratified by label where every class allows it."""
    from sklearn.model_selection import train_test_split

    def cut(frame: pd.DataFrame, size: float, salt: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        counts = frame["label"].value_counts()
        strat = frame["label"] if len(counts) > 1 and counts.min() >= 2 else None
        return train_test_split(frame, test_size=size, random_state=seed + salt, stratify=strat)

    rest, test = cut(rows, test_size, 0)
    train, val = cut(rest, val_size / (1 - test_size), 1)
    return {"train": train.reset_index(drop=True), "val": val.reset_index(drop=True), "test": test.reset_index(drop=True)}


def old_data(paths: Paths, chain: list[dict]) -> dict[str, pd.DataFrame]:
    """What production has learned: the processed splits plus the new splits of every promoted
    cycle in its lineage (from their data snapshots)."""
    splits = {s: [load_split(paths, s)[["text", "label"]]] for s in ("train", "val", "test")}
    for entry in chain:
        snap = entry.get("data_snapshot")
        if not snap:
            continue
        for s, frames in splits.items():
            file = paths.root / snap / f"new_{s}.parquet"
            if not file.is_file():
                raise DataError(f"{file}: missing data snapshot of version {entry['version']}; "
                                f"run `dvc checkout {snap}.dvc` (or `dvc pull`)")
            frames.append(pd.read_parquet(file)[["text", "label"]])
    return {s: pd.concat(f, ignore_index=True) for s, f in splits.items()}


def replay_sample(old_train: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` old training rows, the same rows for the same seed (rehearsal)."""
    n = min(max(n, 0), len(old_train))
    return old_train.sample(n, random_state=seed).reset_index(drop=True) if n else old_train.iloc[:0]


def unlabelled_texts(paths: Paths, since: str | None, exclude: set[str], limit: int, seed: int,
                     cfg: Config | None = None) -> list[str]:
    """Production-log texts logged after `since`, minus any labelled text (no test leakage).

    With `cfg`, after a partial drift (a new segment of the traffic, tasks.models.monitor.drifted_segment)
    only the segment's texts among them: the cycle learns the new segment, not the whole log.
    """
    from tasks.models.monitor import drifted_segment
    from tasks.infra.prodlog import read_log

    logged = read_log(paths, since=since)  # only the days after `since` are read
    texts = logged["text"].dropna().astype(str) if len(logged) else pd.Series([], dtype=str)
    texts = texts[~texts.isin(exclude) & texts.str.strip().astype(bool)].drop_duplicates()
    if len(texts) > limit:
        texts = texts.sample(limit, random_state=seed)
    segment = drifted_segment(cfg, paths, texts.tolist(), since) if cfg is not None else None
    return texts.tolist() if segment is None else segment


# ------------------------------------------------------------------------------------ train/score

def loop(cfg: Config, epochs: int, lr: float, desc: str) -> LoopConfig:
    """The loop settings of a cycle's teacher or student, built as every stage's are (`loop_config`).

    `retrain` names only epochs, lr (per model) and batch size; the rest are `TrainConfig`'s
    defaults. No early stopping (patience = epochs): a cycle is short, and the best epoch is kept anyway.
    """
    section = TrainConfig(epochs=epochs, lr=lr, batch_size=cfg.retrain.batch_size, patience=epochs)
    return loop_config(section, cfg.base, desc, cfg.evaluate.metric)


@dataclass(frozen=True)
class Scored:
    """A model's predictions on the old and the new test split, and its scores (evaluate.metric)."""

    old: np.ndarray
    new: np.ndarray
    scores: dict  # {"old", "new", "all"}


def both(model, tokenizer, old_test: pd.DataFrame, new_test: pd.DataFrame, max_length: int, metric: str,
         classes: int) -> Scored:
    """Predictions and scores on the old and the new test split, and on both together."""
    old, new = predict_labels(model, tokenizer, old_test, max_length), predict_labels(model, tokenizer, new_test, max_length)
    labels_old, labels_new = old_test["label"].to_numpy(), new_test["label"].to_numpy()
    score = lambda y, p: metric_value(y, p, metric, classes) if len(y) else float("nan")  # noqa: E731
    return Scored(old, new, {"old": score(labels_old, old), "new": score(labels_new, new),
                             "all": score(np.concatenate([labels_old, labels_new]), np.concatenate([old, new]))})


def update_teacher(cfg: Config, model: torch.nn.Module, tokenizer, train_rows: pd.DataFrame, val_rows: pd.DataFrame,
                   out: Path) -> tuple[torch.nn.Module, dict]:
    """Fine-tune the teacher (in place) on new + replayed rows; saved to `out/teacher`."""
    result = train(model, encode_split(tokenizer, train_rows, cfg.base.max_length),
                   encode_split(tokenizer, val_rows, cfg.base.max_length), supervised_step,
                   loop(cfg, cfg.retrain.teacher_epochs, cfg.retrain.teacher_lr, "retrain teacher"),
                   tokenizer.pad_token_id, out / "checkpoints" / "teacher")
    save_model(model.cpu(), tokenizer, out / "teacher")
    return model.eval(), {"history": result.history, "best_val": result.best_score,
                                     "train_rows": len(train_rows), "seconds": round(result.seconds, 1)}


def start_student(cfg: Config, teacher: torch.nn.Module, tokenizer, champion: torch.nn.Module | None,
                  champion_tokenizer) -> tuple[torch.nn.Module, list[int], bool]:
    """The challenger before training, its layer map, and whether to prune its vocabulary after training.

    The student kind is the champion's: a static champion gives a static challenger, warm-started
    from the champion's table and head, or (`retrain.warm_start: false`) model2vec's table of the
    updated teacher with a new head of the champion's shape. A pruned champion is put back on the
    teacher's vocabulary to train on the teacher's token ids (tasks/models/vocab.py `unprune`), and
    the challenger is pruned again on its own transfer set.
    """
    rt, dc = cfg.retrain, cfg.distill
    static = is_static(champion) if champion is not None else dc.student == "static"
    prune = is_pruned(champion) if champion is not None else dc.prune_vocab
    if rt.warm_start and champion is not None:
        student = copy.deepcopy(champion)
        if is_pruned(student):
            student = unprune(student, champion_tokenizer, teacher, tokenizer)
        layer_map = [] if static else student_layer_map(
            dc.model_copy(update={"student_layers": num_layers(student)}), num_layers(teacher))
    elif static:
        dims = champion.config.hidden_size if champion is not None else dc.static_dims
        hidden = champion.config.head_hidden if champion is not None else dc.static_hidden
        labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
        student, layer_map = static_from_teacher(teacher, tokenizer, labels, dims, hidden,
                                                 dc.static_train_embeddings), []
    else:
        layer_map = student_layer_map(dc, num_layers(teacher))
        student = build_student(teacher, layer_map)
    return student, layer_map, prune


def fit_student(cfg: Config, teacher: torch.nn.Module, teacher_dir: Path, tokenizer, parts: dict[str, pd.DataFrame],
                pseudo: list[str], val_rows: pd.DataFrame, champion: torch.nn.Module | None, out: Path,
                name: str, champion_tokenizer=None) -> tuple[torch.nn.Module, object, dict]:
    """Distil a student on new + replayed rows (+ `pseudo` texts, soft targets only).

    The transfer set and the teacher-output cache are made as the distill stage makes them
    (`transfer_set`, `teacher_outputs`: `distill.cache` applies), but the cache and the checkpoints
    go inside the cycle's folder `out` (versioned with it; models/cache/ stays the pipeline's own).

    Warm-started from `champion` when `retrain.warm_start`, else built fresh from the teacher's
    layers; with `retrain.alpha_lwf` > 0 and a champion, the replayed rows also pull the student
    towards the champion's outputs (learning without forgetting). A static or pruned champion: see
    `start_student`. Returns the challenger, its tokenizer (pruned or the teacher's) and the record.
    """
    rt, dc = cfg.retrain, cfg.distill
    device = resolve_device(cfg.base.device)
    student, layer_map, prune = start_student(cfg, teacher, tokenizer, champion, champion_tokenizer)
    static = is_static(student)
    labelled = pd.concat([parts["new"][["text", "label"]], parts["replay"][["text", "label"]]], ignore_index=True)
    data = transfer_set(tokenizer, labelled, pseudo, cfg.base.max_length)
    old_rows = torch.zeros(len(data), dtype=torch.bool)
    old_rows[len(parts["new"]):len(labelled)] = True
    teacher.to(device).eval().requires_grad_(False)
    cached, _, key = teacher_outputs(dc, teacher_dir, out / "cache", teacher, data, tokenizer.pad_token_id, layer_map,
                                     device, stage="retrain", precision=cfg.base.precision)
    extra = None
    if rt.alpha_lwf > 0 and champion is not None and old_rows.any():
        # The champion reads its own token ids: a pruned one tokenises the transfer texts with its tokenizer.
        own = data if not is_pruned(champion) else transfer_set(champion_tokenizer, labelled, pseudo, cfg.base.max_length)
        previous = torch.from_numpy(predict_logits(champion.to(device), own, champion_tokenizer.pad_token_id, 128,
                                                   device, precision=cfg.base.precision))

        def extra(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
            index = batch["index"].cpu()
            mask = old_rows[index]
            if not mask.any():
                return logits.sum() * 0.0, {}
            kl = soft_target_kl(logits[mask.to(logits.device)], previous[index[mask]].to(logits.device),
                                dc.temperature)
            return rt.alpha_lwf * kl, {"lwf": kl.detach()}

    step = make_step(teacher, cached, loss_weights(dc, static), layer_map, dc.hidden_loss, extra)
    # A static student's own epochs and learning rate (distill.static_*): retrain's suit transformer weights.
    epochs, lr = (dc.static_epochs, dc.static_lr) if static else (rt.student_epochs, rt.student_lr)
    result = train(student, data, encode_split(tokenizer, val_rows, cfg.base.max_length), step,
                   loop(cfg, epochs, lr, f"retrain student ({name})"), tokenizer.pad_token_id,
                   out / "checkpoints" / f"student_{name}")
    student_tokenizer = tokenizer
    if prune:
        student, student_tokenizer, _ = prune_vocabulary(student.cpu(), tokenizer, data, "the teacher")
    return student.cpu().eval(), student_tokenizer, {"rows": {"new": len(parts["new"]), "replay": len(parts["replay"]),
                                           "pseudo": len(pseudo)},
                                  "cache_key": key, "layer_map": layer_map,
                                  "warm_start": rt.warm_start and champion is not None, "lwf": extra is not None,
                                  "best_val": result.best_score, "history": result.history,
                                  "seconds": round(result.seconds, 1)}


# ----------------------------------------------------------------------------------------- decide

@dataclass(frozen=True)
class CycleGates:
    min_gain: float
    max_forgetting: float
    min_retention: float


def decide_cycle(gain: Comparison, old: Comparison, retention: float, gates: CycleGates) -> Decision:
    """Champion / challenger on the old and the new test split; the reason names the gate that failed.

    The gain must reach `min_gain` *and*, when `min_gain` > 0, be significant: a gain whose paired
    interval reaches zero is inside the noise of the new test split, and the cycle waits for more
    labels rather than promote it.

    Args:
        gain: challenger (B) against champion (A) on the new test split.
        old: challenger against champion on the old test split (forgetting = -old.diff).
        retention: challenger score / teacher score, both on old + new test rows.
        gates: the thresholds.
    """
    forgetting = -old.diff
    numbers = (f"gain {gain.describe()} on the new test split (min_gain {gates.min_gain}), forgetting "
               f"{forgetting:+.4f} (CI {-old.ci_high:+.4f}..{-old.ci_low:+.4f}) on the old one "
               f"(max_forgetting {gates.max_forgetting}), retention {retention:.4f}")
    if retention < gates.min_retention:
        return Decision(False, f"evaluate gate: retention {retention:.4f} < evaluate.min_retention {gates.min_retention}")
    if gain.diff < gates.min_gain - 1e-9:
        return Decision(False, f"gain gate: {numbers}")
    if gates.min_gain > 0 and not gain.significant_gain:  # min_gain <= 0 demands no gain, so no proof of one
        need = gain.rows_to_show()
        return Decision(False, f"gain gate: the gain is inside the noise of the {gain.rows}-row new test split; "
                               f"waiting for more labels (about {need} new test rows would show a gain this size): "
                               f"{numbers}")
    if forgetting > gates.max_forgetting + 1e-9:
        return Decision(False, f"forgetting gate: {numbers}")
    return Decision(True, f"challenger passed: {numbers}")


def teacher_gate(before: dict, after: dict, max_forgetting: float) -> Decision:
    """The updated teacher must not be worse on the new split, nor forget more than allowed on the old."""
    gain, forgetting = after["new"] - before["new"], before["old"] - after["old"]
    text = f"new-split gain {gain:+.4f}, old-split forgetting {forgetting:+.4f} (teacher_max_forgetting {max_forgetting})"
    if gain < 0 or forgetting > max_forgetting + 1e-9:
        return Decision(False, f"teacher gate: {text}")
    return Decision(True, f"teacher passed: {text}")


def settle(report: dict, judged_against: int | None, txn: Transaction) -> dict:
    """Under the write lock: a promotion stands only if production is still the champion it beat."""
    moved = txn.moved_since(judged_against) if report["promoted"] else None
    return {**report, "status": "not promoted", "promoted": False, "reason": moved} if moved else report


# ------------------------------------------------------------------------------------------ cycle

@contextlib.contextmanager
def scratch_dirs(paths: Paths) -> Iterator[tuple[Path, Path]]:
    """Temporary data and model folders for a cycle whose version is not allocated yet, next to the
    cycle folders; removed unless `place_cycle` moved them into place."""
    tag = uuid.uuid4().hex[:8]
    folders = tuple(final.with_name(f".{final.name}.tmp-{tag}") for final in cycle_dirs(paths, "pending"))
    for folder in folders:
        # Only the cycle lock's holder writes below data/cycles and models/cycles: any temporary there
        # now is what a killed cycle left.
        for stale in folder.parent.glob(".*.tmp-*") if folder.parent.is_dir() else []:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        folder.mkdir(parents=True)
    try:
        yield folders
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def place_cycle(paths: Paths, version: int, scratch: tuple[Path, Path]) -> tuple[Path, Path]:
    """Move a cycle's temporary folders to data/cycles/v<N>/ and models/cycles/v<N>/ (under the write lock:
    N was just allocated, so anything already there is a crashed cycle's leftover, replaced)."""
    finals = cycle_dirs(paths, version)
    for tmp, final in zip(scratch, finals):
        with atomic_path(final) as target:
            os.replace(tmp, target)
    return finals


def retrain(cfg: Config, paths: Paths, trigger: str = "manual", detail: str | None = None,
            source: str | None = None) -> dict:
    """Run one retraining cycle; see the module docstring.

    Args:
        cfg: the config (`retrain`, `distill` loss settings, `evaluate.min_retention`).
        paths: the workspace.
        trigger: manual | drift | schedule: why the cycle runs (recorded in the registry).
        detail: what triggered it, e.g. the drift report folder or the monitor's flow run.
        source: who runs it, e.g. the Prefect flow run (recorded); default $KDISTILL_RUN_SOURCE or the CLI.

    Returns:
        reports/retrain.json's content: status ("promoted" | "not promoted" | "waiting for labels"),
        version (None while waiting for labels: nothing is written), reason, the scores table and the batches.

    Raises:
        CycleRunning: another retraining or rollback holds the workspace (the message says which).
        LockBusy: another writer held the registry's write lock too long; the cycle's work is discarded.
        DataError: no production model, or a data snapshot of its lineage is missing.
    """
    rt = cfg.retrain
    with cycle_lock(paths, f"retraining ({trigger})"), stage_log("retrain") as info:
        prepare_torch(cfg.base.threads, cfg.base.seed)
        registry = ensure_archived(paths, f"retraining ({trigger})")
        current = registry.get("production")
        if current is None or not (production_dir(paths) / "config.json").is_file():
            raise DataError(f"{production_dir(paths)}: no production model to retrain; run the pipeline first")
        chain = lineage(registry, current)
        names = load_labels(paths)
        teacher_dir = paths.root / (chain[-1].get("teacher") or paths.teacher.relative_to(paths.root))
        tokenizer = load_tokenizer(str(teacher_dir), key="teacher of the production lineage")
        own = load_tokenizer(str(production_dir(paths)), key="models/production").get_vocab()
        pruned = bool((read_json(production_dir(paths) / "config.json") or {}).get("pruned_vocab"))
        if own != tokenizer.get_vocab() and not (pruned and set(own) <= set(tokenizer.get_vocab())):
            # A pretrained student with its own tokenizer (distill.student_model): the cycle below would feed
            # it the teacher's token ids, and build a fresh student from the teacher's layers. (A student
            # pruned from the teacher's vocabulary is put back on it: `start_student`.)
            raise ConfigError(f"retrain: the production student reads its own tokenizer, not its teacher's "
                              f"({teacher_dir}); retraining such a pair is not supported: run the pipeline "
                              "(kdistill run) on the new data instead")
        learned = {b["sha256"] for e in chain for b in e.get("batches", []) if b.get("status") == "used"}
        new_rows, batches = gather_labelled(cfg, paths, names, tokenizer, learned)
        old = old_data(paths, chain)
        seen = set(pd.concat([old[s]["text"] for s in old]))
        new_rows = new_rows[~new_rows["text"].isin(seen)].reset_index(drop=True)
        base = {"version": None, "time": now(), "trigger": trigger, "detail": detail, "parent": current,
                "source": run_source(source, f"kdistill retrain ({trigger})"), "batches": batches}
        if len(new_rows) < rt.min_new_labelled:
            report = {**base, "status": "waiting for labels", "promoted": False,
                      "reason": f"{len(new_rows)} new labelled rows < retrain.min_new_labelled {rt.min_new_labelled}: "
                                f"a gain cannot be measured; add labelled batches to {rt.labelled}"}
            write_json(paths.reports / "retrain.json", report)
            log.info("[retrain] %s", report["reason"])
            return report
        new = split_new(new_rows, rt.new_val_size, rt.new_test_size, cfg.base.seed)
        labelled_texts = seen | set(new_rows["text"])
        pool = unlabelled_texts(paths, chain[-1].get("time"), labelled_texts, rt.max_unlabelled, cfg.base.seed,
                                cfg)
        start = time.perf_counter()
        with scratch_dirs(paths) as scratch:
            report = run_cycle(cfg, paths, base, names, teacher_dir, new, old, pool, *scratch)
            report["seconds"] = round(time.perf_counter() - start, 1)
            with transaction(paths, f"retraining ({trigger})") as txn:
                report = {**settle(report, current, txn), "version": txn.next_version()}
                data_dir, model_dir = place_cycle(paths, report["version"], scratch)
                write_json(model_dir / "report.json", report)
                txn.add(registry_entry(report, paths, data_dir, model_dir, teacher_dir),
                        model_dir / "student" if report["promoted"] else None)
        version = report["version"]
        write_json(paths.reports / "retrain.json", report)
        info["wrote"] += [data_dir, model_dir, registry_path(paths)]
        log.info("[retrain] version %d %s: %s", version, report["status"], report["reason"])
        report["recorded"] = record(paths, f"retrain: version {version} {report['status']} ({trigger})",
                                    [data_dir, model_dir], rt.push, rt.git_commit,
                                    f"model-v{version}" if report["promoted"] else None)
    return report


def registry_entry(report: dict, paths: Paths, data_dir: Path, model_dir: Path, teacher_dir: Path) -> dict:
    """The registry record of a cycle: when, why, its data and models, scores, and the decision."""
    student = model_dir / "student"
    teacher = model_dir / "teacher" if (model_dir / "teacher").is_dir() else teacher_dir
    challenger = report.get("scores", {}).get("challenger", {})
    return new_entry(
        report["version"], report["promoted"], report["reason"], trigger=report["trigger"], source=report["source"],
        parent=report["parent"], time=report["time"], detail=report["detail"],
        data_snapshot=str(data_dir.relative_to(paths.root)), data_hash=hash_dir(data_dir),
        models=str(model_dir.relative_to(paths.root)), teacher=str(teacher.relative_to(paths.root)),
        cache_key=report.get("cache_key"), model_hash=hash_dir(student) if student.is_dir() else None,
        metrics={"metric": report.get("metric"), "score": challenger.get("all"), "old_score": challenger.get("old"),
                 "new_score": challenger.get("new"), "forgetting": report.get("forgetting"),
                 "gain": report.get("gain"), "retention": report.get("retention"),
                 "comparisons": report.get("comparisons")},
        batches=report["batches"])


def run_cycle(cfg: Config, paths: Paths, base: dict, names: list[str], teacher_dir: Path, new: dict, old: dict,
              pool: list[str], data_out: Path, model_out: Path) -> dict:
    """The training part of a cycle, writing into the cycle's temporary folders; returns the report."""
    rt, seed, max_length = cfg.retrain, cfg.base.seed, cfg.base.max_length
    replay = replay_sample(old["train"], round(rt.replay_ratio * len(new["train"])), seed)
    # Model selection on new + old validation rows (as many old as new, fewer without rehearsal).
    old_val = replay_sample(old["val"], round(min(1.0, rt.replay_ratio) * len(new["val"])), seed)
    val = pd.concat([new["val"][["text", "label"]], old_val], ignore_index=True)
    for name, frame in (("new_train", new["train"]), ("new_val", new["val"]), ("new_test", new["test"]),
                        ("replay", replay), ("val", val)):
        write_parquet(data_out / f"{name}.parquet", frame)
    report = {**base, "rows": {
        "new_train": len(new["train"]), "new_val": len(new["val"]), "new_test": len(new["test"]),
        "replay": len(replay), "old_test": len(old["test"]), "unlabelled_pool": len(pool)}}
    metric = cfg.evaluate.metric

    def scored(model, tok) -> Scored:
        return both(model, tok, old["test"], new["test"], max_length, metric, len(names))

    champion_tok = load_tokenizer(str(production_dir(paths)), key="models/production")
    champion, _ = load_classifier(str(production_dir(paths)), names, key="models/production")
    champ = scored(champion, champion_tok)
    scores = {"champion": champ.scores}
    tokenizer = load_tokenizer(str(teacher_dir), key="teacher of the production lineage")
    teacher, _ = load_classifier(str(teacher_dir), names, key="teacher of the production lineage")
    scores["teacher_before"] = scored(teacher, tokenizer).scores
    teacher_train = pd.concat([new["train"][["text", "label"]], replay[["text", "label"]]], ignore_index=True)
    teacher, report["teacher"] = update_teacher(cfg, teacher, tokenizer, teacher_train, val, model_out)
    scores["teacher"] = scored(teacher, tokenizer).scores
    gate = teacher_gate(scores["teacher_before"], scores["teacher"], rt.teacher_max_forgetting)
    report["scores"] = scores
    if not gate.promote:
        return {**report, "status": "not promoted", "promoted": False, "reason": gate.reason}
    probs = predict_probs(teacher, tokenizer, pool, max_length, cfg.base.precision)
    confident = probs.max(-1) >= rt.min_teacher_confidence
    write_parquet(data_out / "unlabelled.parquet", pd.DataFrame({
        "text": pool, "teacher_label": probs.argmax(-1), "confidence": probs.max(-1), "selected": confident}))
    pseudo = [t for t, keep in zip(pool, confident) if keep]
    report["rows"]["pseudo"] = len(pseudo)
    variants = {"with_pseudo": pseudo} if pseudo else {}
    if not pseudo or rt.pseudo_ablation:
        variants["without_pseudo"] = []
    students, tokenizers, info, preds = {}, {}, {}, {}
    parts = {"new": new["train"], "replay": replay}
    for name, texts in variants.items():
        students[name], tokenizers[name], info[name] = fit_student(
            cfg, teacher, model_out / "teacher", tokenizer, parts, texts, val, champion, model_out, name, champion_tok)
        preds[name] = scored(students[name], tokenizers[name])
        info[name]["scores"] = preds[name].scores
    chosen = max(info, key=lambda n: (info[n]["best_val"], n == "with_pseudo"))
    report["students"], report["chosen"] = info, chosen
    save_model(students[chosen], tokenizers[chosen], model_out / "student")
    challenger = info[chosen]["scores"]
    retention = challenger["all"] / scores["teacher"]["all"] if scores["teacher"]["all"] > 0 else 0.0
    scores["challenger"] = challenger
    # Paired on the same rows: champion (A) against challenger (B), new split and old split.
    compare = {split: paired_comparison(old_or_new["test"]["label"].to_numpy(), getattr(champ, split),
                                        getattr(preds[chosen], split), metric, len(names), cfg.evaluate.confidence,
                                        seed=seed)
               for split, old_or_new in (("new", new), ("old", old))}
    report.update(cache_key=info[chosen]["cache_key"], retention=retention, metric=metric,
                  gain=compare["new"].diff, forgetting=-compare["old"].diff,
                  comparisons={split: c.to_dict() for split, c in compare.items()})
    if len(variants) == 2:
        w, wo = info["with_pseudo"]["scores"], info["without_pseudo"]["scores"]
        report["pseudo_label_effect"] = {"new": w["new"] - wo["new"], "old": w["old"] - wo["old"],
                                         "verdict": "helped" if w["new"] + w["old"] > wo["new"] + wo["old"] else
                                         "hurt" if w["new"] + w["old"] < wo["new"] + wo["old"] else "no difference"}
    decision = decide_cycle(compare["new"], compare["old"], retention,
                            CycleGates(rt.min_gain, rt.max_forgetting, cfg.evaluate.min_retention))
    return {**report, "status": "promoted" if decision.promote else "not promoted", "promoted": decision.promote,
            "reason": decision.reason}


def score_rows(report: dict) -> list[tuple[str, dict]]:
    """(model, {"old", "new"}) for every model the cycle scored: champion, teachers, students."""
    scores = report.get("scores", {})
    rows = [("champion (production)", scores.get("champion")), ("teacher before", scores.get("teacher_before")),
            ("teacher after", scores.get("teacher"))]
    rows += [(f"student {n}", s["scores"]) for n, s in report.get("students", {}).items()]
    return [(name, s) for name, s in rows if s]


def cycle_table(report: dict) -> str:
    """The cycle's scores as a plain-text table (old-test, new-test score in evaluate.metric, the
    paired comparisons, promoted)."""
    lines = [f"version {report['version']} ({report['trigger']}): {report['status']} - {report['reason']}",
             f"{'model':<28}{'old test':>10}{'new test':>10}"]
    lines += [f"{name:<28}{s['old']:>10.4f}{s['new']:>10.4f}" for name, s in score_rows(report)]
    if "gain" in report:
        lines.append(f"challenger ({report['chosen']}): gain {report['gain']:+.4f}, forgetting {report['forgetting']:+.4f}, "
                     f"retention {report['retention']:.4f} ({report.get('metric', 'accuracy')})")
    for split, c in report.get("comparisons", {}).items():
        lines.append(f"challenger - champion on the {split} test split: {c['diff']:+.4f} "
                     f"({c['confidence']:.0%} CI {c['ci_low']:+.4f}..{c['ci_high']:+.4f}, p={c['p_value']:.3g}, "
                     f"{c['rows']} rows)")
    if "pseudo_label_effect" in report:
        e = report["pseudo_label_effect"]
        lines.append(f"pseudo-labelled text {e['verdict']}: {e['new']:+.4f} new, {e['old']:+.4f} old")
    return "\n".join(lines)
