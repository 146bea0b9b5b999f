"""The whole pipeline with an MPNet teacher (issue 22, item 2), at a size a test can afford.

all-mpnet-base-v2's architecture (relative attention bias, RoBERTa-style positions, <s>/<pad>/</s> at ids
0/1/2, no token type ids, no pooler) as a tiny 12-layer MPNet built from a config in code, with a WordPiece
vocabulary trained on the embedded movie reviews: through the CLI, as a user runs it, `run` (ingest →
validate → teacher → distill by the DistilBERT 12 → 6 map → finetune → evaluate → promote), `predict` in
torch and ONNX int8, `score`, `drift` with the MPNet as the monitor's embedder, a `retrain` cycle, a `sweep`
over every student family (depths, a static width, pruning) and `rollback`. What holds at 110M parameters
is measured by bench/base_teacher.py; this checks that nothing in the code assumes BERT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.code.test_mpnet import make_mpnet_tokenizer, make_tiny_mpnet
from tests.conftest import embedded_sample, save_model_dir
from tasks.cli import main
from tasks.infra.storage import Paths, read_json

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def mpnet_dir(tmp_path_factory) -> Path:
    """A tiny 12-layer MPNet classifier (hidden 32) whose vocabulary (400) is learnt from movie reviews."""
    texts = embedded_sample("movies", 2000, 7)["text"].tolist()
    tokenizer = make_mpnet_tokenizer(texts, vocab_size=400)
    return save_model_dir(make_tiny_mpnet(len(tokenizer), layers=12), tokenizer,
                          tmp_path_factory.mktemp("mpnet12") / "teacher")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mpnet_dir):
    """The root and a `kdistill` that runs in it with the tiny MPNet as the teacher and the drift embedder."""
    root = tmp_path_factory.mktemp("mpnet_ws")
    settings = [f"teacher.model={mpnet_dir}", f"drift.embedder={mpnet_dir}", "base.precision=fp32",
                "base.max_length=64", "base.threads=1", "ingest.max_rows=300", "teacher.epochs=1",
                "teacher.min_accuracy=0.0", "distill.epochs=1", "distill.student_layers=6", "distill.layer_map=null",
                "evaluate.min_retention=0.0", "evaluate.latency_runs=3", "evaluate.warmup_runs=1",
                "evaluate.throughput_batches=1", "score.settle_seconds=0", "drift.window_rows=150",
                "drift.min_window=100", "retrain.min_new_labelled=20", "retrain.teacher_epochs=1",
                "retrain.student_epochs=1", "retrain.min_teacher_confidence=0.0", "retrain.min_gain=-1.0",
                "retrain.max_forgetting=1.0", "retrain.teacher_max_forgetting=1.0", "retrain.push=false",
                "retrain.max_unlabelled=60"]

    def kdistill(*args: str) -> int:
        argv = ["--params", str(REPO / "params.yaml"), "--root", str(root), "-q"]
        for setting in settings:
            argv += ["-S", setting]
        return main([*argv, *args])

    return root, kdistill


@pytest.fixture(scope="module")
def after_run(workspace):
    root, kdistill = workspace
    assert kdistill("run") == 0
    return root, kdistill


def test_run_distils_12_into_6_by_the_distilbert_map_and_promotes(after_run):
    root, _ = after_run
    paths = Paths(root)
    distill = read_json(paths.reports / "distill.json")
    assert distill["layer_map"] == [0, 2, 4, 7, 9, 11]
    production = json.loads((root / "models" / "production" / "config.json").read_text())
    assert production["model_type"] == "mpnet" and production["num_hidden_layers"] == 6
    assert read_json(root / "models" / "registry.json")["production"] == 1
    metrics = read_json(paths.reports / "metrics.json")
    assert metrics["student"]["params"] < metrics["teacher"]["params"]


@pytest.mark.parametrize("variant", ["torch-fp32", "onnx-int8"])
def test_predict_answers_with_the_mpnet_student(after_run, capsys, variant):
    root, kdistill = after_run
    capsys.readouterr()
    assert kdistill("predict", "--model", str(root / "models" / "production"), "--variant", variant,
                    "a moving, beautifully acted film", "dull and far too long") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)


@pytest.fixture(scope="module")
def after_score_and_drift(after_run):
    root, kdistill = after_run
    incoming = root / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    embedded_sample("tweets", 160, 3)[["text"]].to_csv(incoming / "stream.csv", index=False)
    assert kdistill("score") == 0
    assert kdistill("drift") == 0
    return root, kdistill


def test_score_logs_and_drift_embeds_with_the_mpnet(after_score_and_drift):
    root, _ = after_score_and_drift
    assert list((root / "data" / "production").rglob("*.parquet"))
    verdicts = sorted((root / "reports" / "drift").glob("*/verdict.json"))
    assert verdicts
    verdict = read_json(verdicts[-1])
    assert verdict["status"] == "ok" and verdict["window_rows"] == 150, verdict["status"]
    assert 0.0 <= verdict["signals"]["embedding"]["score"] <= 1.0  # the MPNet embedder's domain classifier ran


def test_retrain_then_sweep_every_family_then_rollback(after_score_and_drift, capsys):
    root, kdistill = after_score_and_drift
    labelled = root / "data" / "incoming" / "labelled"
    labelled.mkdir(parents=True, exist_ok=True)
    embedded_sample("tweets", 80, 4).to_csv(labelled / "tweets-1.csv", index=False)
    capsys.readouterr()
    assert kdistill("retrain") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["promoted"], report["reason"]  # the gates are open here
    paths = Paths(root)
    assert read_json(root / "models" / "registry.json")["production"] == 2
    production = json.loads((root / "models" / "production" / "config.json").read_text())
    assert production["model_type"] == "mpnet" and production["num_hidden_layers"] == 6

    assert kdistill("-S", "sweep.depths=[1, 3]", "-S", "sweep.temperatures=[2.0]", "-S", "sweep.epochs=[1]",
                    "-S", "sweep.static_dims=[16]", "-S", "sweep.prune_vocab=[false, true]", "-S", "sweep.max_drop=1.0",
                    "-S", "sweep.variants=[torch-fp32, onnx-int8]", "sweep", "--no-apply") == 0
    trials = read_json(root / "reports" / "sweep" / "trials.json")["trials"]
    assert {t["status"] for t in trials} == {"done"}
    kinds = {(t["params"].get("student", "transformer"), bool(t["params"].get("prune_vocab"))) for t in trials}
    assert kinds == {("transformer", False), ("transformer", True), ("static", False), ("static", True)}

    assert kdistill("rollback", "1") == 0
    assert read_json(root / "models" / "registry.json")["production"] == 1
