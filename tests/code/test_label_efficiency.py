"""Few labels (issue 12, part 1): a small labelled train split plus an unlabelled file through the
pipeline, SetFit's contrastive teacher method, and the label-efficiency bench's own helpers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.infra.config import load_config
from tasks.infra.errors import ConfigError
from tasks.infra.storage import Paths
from tests.conftest import CORPUS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def few_label_files(folder: Path, labelled: int = 24, unlabelled: int = 60) -> dict[str, Path]:
    """Movie snippets as a few-label user has them: small labelled splits, a larger unlabelled file.

    Two unlabelled texts are also test texts: the pipeline must drop them (no test leakage).
    """
    from tasks.infra.embedded import read_embedded

    rows = read_embedded("movies").drop_duplicates("text").sample(labelled + 40 + unlabelled, random_state=0)
    frames = {"train": rows[:labelled], "val": rows[labelled:labelled + 20], "test": rows[labelled + 20:labelled + 40]}
    files = {}
    for split, frame in frames.items():
        files[split] = folder / f"{split}.csv"
        frame.to_csv(files[split], index=False)
    texts = pd.concat([rows[labelled + 40:]["text"], frames["test"]["text"][:2]])
    files["unlabelled"] = folder / "unlabelled.csv"
    pd.DataFrame({"body": texts}).to_csv(files["unlabelled"], index=False)
    return files


def few_label_params(tmp_path: Path, teacher_dir: Path, files: dict[str, Path], **teacher) -> Path:
    """params.yaml as the user would edit it: files as the source, `distill.unlabeled` set, tiny models."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(source="files", files={s: str(files[s]) for s in ("train", "val", "test")}, max_rows=None)
    params["teacher"].update(model=str(teacher_dir), epochs=1, min_accuracy=0.0, **teacher)
    params["distill"].update(epochs=1, unlabeled={"source": "file", "path": str(files["unlabelled"]),
                                                  "text_column": "body"})
    params["evaluate"].update(min_retention=0.0, latency_runs=2, warmup_runs=1, throughput_batches=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow
def test_kdistill_run_distils_over_few_labels_and_an_unlabelled_file(tmp_path, tiny_teacher_dir):
    """`kdistill run` with 24 labelled rows and `distill.unlabeled`: every stage runs, and the student's
    transfer set is the labelled rows plus the unlabelled texts that are not test texts."""
    from tasks.cli import main

    files = few_label_files(tmp_path)
    params = few_label_params(tmp_path, tiny_teacher_dir, files)
    root = tmp_path / "project"
    assert main(["--params", str(params), "--root", str(root), "-q", "run"]) == 0
    paths = Paths(root)
    distill = json.loads((paths.reports / "distill.json").read_text())
    assert distill["transfer_rows"] == {"labelled": 24, "unlabelled": 60}  # 62 given, 2 of them test texts
    assert distill["cache"] == "miss"
    metrics = json.loads((paths.reports / "metrics.json").read_text())
    assert 0.0 <= metrics["student"]["accuracy"] <= 1.0
    assert (paths.student / "model.safetensors").is_file()


def test_few_labels_and_unlabelled_file_through_teacher_and_distill(tmp_path, tiny_teacher_dir):
    """The stage functions `kdistill run` calls: ingest, teacher, distill with the unlabelled file; the
    unlabelled rows enter the transfer set without labels (soft targets only)."""
    from tasks.core.data import IGNORE_LABEL
    from tasks.distill import distill, load_unlabeled, transfer_set
    from tasks.infra.splits import load_split
    from tasks.models.loading import load_tokenizer
    from tasks.ingest import ingest
    from tasks.teacher import teacher

    files = few_label_files(tmp_path)
    cfg = load_config(few_label_params(tmp_path, tiny_teacher_dir, files))
    paths = Paths(tmp_path / "project")
    ingest(cfg, paths)
    teacher(cfg, paths)
    report = distill(cfg, paths)
    assert report["transfer_rows"] == {"labelled": 24, "unlabelled": 60}
    train = load_split(paths, "train")
    exclude = set(pd.concat([load_split(paths, s)["text"] for s in ("train", "val", "test")]))
    unlabelled = load_unlabeled(cfg.distill, exclude, cfg.base.seed)
    data = transfer_set(load_tokenizer(str(paths.teacher)), train, unlabelled, cfg.base.max_length)
    labels = data.labels
    assert (labels[:24] == train["label"].to_numpy()).all() and (labels[24:] == IGNORE_LABEL).all()


def _same_minus_other_similarity(folder: Path, texts: list[str], labels: np.ndarray) -> float:
    """Mean cosine similarity of same-label pairs minus that of different-label pairs (mean-pooled)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    sim = (emb @ emb.T).numpy()
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(texts), dtype=bool)
    return float(sim[same & off_diagonal].mean() - sim[~same].mean())


def test_setfit_contrastive_tuning_pulls_same_label_texts_together(tmp_path, tiny_teacher_dir):
    """SetFit's body tuning on a tiny model, offline: afterwards same-label texts are closer than before,
    relative to different-label texts; the saved folder is a plain encoder a classifier loads."""
    from tasks.models.contrastive import contrastive_body
    from tasks.models.loading import load_classifier

    labels = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1, 0])  # CORPUS's sentiment
    before = _same_minus_other_similarity(tiny_teacher_dir, CORPUS, labels)
    body = contrastive_body(str(tiny_teacher_dir), CORPUS, labels.tolist(), tmp_path / "body", seed=0,
                            max_steps=40, lr=1e-3)
    after = _same_minus_other_similarity(body, CORPUS, labels)
    assert after > before + 0.3, (before, after)  # measured: -0.005 before, 0.85 after
    model, head_ready = load_classifier(str(body), ["negative", "positive"])
    assert not head_ready and model.config.num_labels == 2


def test_teacher_method_setfit_tunes_the_body_on_the_train_rows_first(tmp_path, tiny_teacher_dir, monkeypatch):
    """`teacher.method: setfit`: the teacher stage fine-tunes the body SetFit tuned on the labelled train rows."""
    import tasks.teacher as teacher_stage
    from tasks.infra.splits import load_split
    from tasks.ingest import ingest

    calls = []

    def spy(model, texts, labels, out, **kwargs):
        calls.append((model, list(texts), list(labels), kwargs))
        return real(model, texts, labels, out, **kwargs)

    real = teacher_stage.contrastive_body
    monkeypatch.setattr(teacher_stage, "contrastive_body", spy)
    files = few_label_files(tmp_path)
    cfg = load_config(few_label_params(tmp_path, tiny_teacher_dir, files, method="setfit", setfit_steps=2))
    paths = Paths(tmp_path / "project")
    ingest(cfg, paths)
    report = teacher_stage.teacher(cfg, paths)
    train = load_split(paths, "train")
    assert len(calls) == 1 and calls[0][0] == str(tiny_teacher_dir)
    assert calls[0][1] == train["text"].tolist() and calls[0][2] == train["label"].tolist()
    assert calls[0][3]["max_steps"] == 2 and calls[0][3]["seed"] == cfg.base.seed
    assert report["method"] == "setfit" and report["finetuned"] and report["history"]


@pytest.mark.parametrize("teacher, message", [
    ({"method": "setfit", "finetune": "false"}, "teacher.finetune: false leaves teacher.method setfit's new head"),
    ({"method": "setfit", "zero_shot": {"negative": "a bad review", "positive": "a good review"}},
     "teacher.method: setfit needs labelled rows"),
    ({"method": "contrastive"}, "teacher.method"),
])
def test_setfit_method_mistakes_are_one_line_naming_the_key(tmp_path, teacher, message):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["teacher"].update(teacher)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "\n" not in str(err.value)


# The bench's helpers (bench/label_efficiency.py).
sys.path.insert(0, str(REPO / "bench"))


def test_labelled_subset_is_stratified_disjoint_and_keeps_every_class():
    from label_efficiency import labelled_subset

    train = pd.DataFrame({"text": [f"t{i}" for i in range(600)], "label": [0] * 500 + [1] * 90 + [2] * 10})
    for seed in (1, 2, 3):
        labelled, rest = labelled_subset(train, 0.01, seed)
        assert len(labelled) == 6 and len(rest) == 594
        assert set(labelled["label"]) == {0, 1, 2}
        assert not set(labelled["text"]) & set(rest["text"])
    one, two = (set(labelled_subset(train, 0.05, s)[0]["text"]) for s in (1, 2))
    assert one != two  # the seed changes which rows are labelled
    labelled, rest = labelled_subset(train, 1.0, 1)
    assert len(labelled) == 600 and rest.empty


def test_repeats_give_small_labelled_sets_the_minimum_steps():
    from label_efficiency import repeats_for

    args = argparse.Namespace(min_steps=30)
    assert repeats_for(6, 32, 3, args) == 54  # 6 rows x 54 = 324 rows: 11 steps an epoch, 33 in all
    assert repeats_for(600, 32, 3, args) == 1


def test_summary_pairs_b_against_a_by_seed():
    from label_efficiency import summarise, table

    def run(a: float, b: float) -> dict:
        teacher = {"val": {"accuracy": 0.7, "f1_macro": 0.7}, "test": {"accuracy": 0.7, "f1_macro": 0.7}}
        return {"labelled": 6, "teacher": "finetune", "teacher_finetune": teacher,
                "a": {"accuracy": a, "f1_macro": a}, "b": {"accuracy": b, "f1_macro": b}}

    results = {"tasks": {"movies": {"metric": "accuracy", "classes": 2}},
               "runs": {"movies/0.01/1": run(0.50, 0.60), "movies/0.01/2": run(0.60, 0.65),
                        "movies/0.01/3": run(0.55, 0.50), "movies/0.05/1": {"labelled": 30}}}
    row = summarise(results)["movies/0.01"]["accuracy"]
    assert row["b-a"]["mean"] == pytest.approx(0.1 / 3) and row["b-a"]["positive"] == 2 and row["b-a"]["n"] == 3
    assert row["a"]["mean"] == pytest.approx(0.55)
    assert "movies/0.05" not in summarise(results)  # an unfinished cell is left out
    assert "| movies (accuracy) | 6 (1%) | 0.5500 ± " in table(results)
