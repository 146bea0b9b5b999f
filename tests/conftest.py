"""Shared fixtures: tiny models built from a config in code and a tokenizer trained here.

Nothing is ever downloaded: HF_HUB_OFFLINE is forced on for the whole session.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def worker_group(nodeid: str) -> str:
    """The worker group of a test under `pytest -n --dist loadgroup`: its file (its module fixtures are built
    once), except tests/flows, one group (the session's Prefect API and trained workspace, built once)."""
    path = nodeid.split("::", 1)[0]
    return "tests/flows" if path.startswith("tests/flows/") else path


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` by worker_group. pytest-xdist 3.8 marks a group by rewriting `item._nodeid`, which
    pytest 9 no longer reads, so its own loadgroup silently runs every test apart: this scheduler groups
    by the test's id instead (xdist's loadfile works the same way)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(config, items):
    """The groups holding a slow end-to-end test first, each in its own order: under xdist the longest groups
    start at once and the many short ones fill the other worker (a serial run only changes its order)."""
    slow = {worker_group(item.nodeid) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: worker_group(item.nodeid) not in slow)


CORPUS = [
    "a great film with a wonderful cast", "an awful boring movie", "the plot is dull and slow",
    "brilliant acting and a moving story", "i loved every minute of it", "a waste of time",
    "the best film of the year", "terrible script and bad jokes", "charming funny and warm",
    "painfully long and forgettable",
]


@pytest.fixture(autouse=True)
def auto_precision_is_fp32(monkeypatch):
    """base.precision `auto` resolves as on a CPU without hardware bf16, whatever this one has: tests
    compare logits at fp32 tolerances and must not depend on the machine. Tests of bf16 ask for it."""
    monkeypatch.setattr("tasks.core.precision.cpu_has_bf16", lambda: False)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A WordPiece BERT tokenizer trained on a few sentences (vocab ~100)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(CORPUS * 5, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    folder = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(folder)
    return fast


def make_tiny_bert(vocab_size: int, layers: int = 4, num_labels: int = 2, seed: int = 0):
    """A tiny BertForSequenceClassification built from a config (random weights)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128, num_labels=num_labels,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    return BertForSequenceClassification(config)


def load_bench(name: str):
    """bench/NAME.py as a module (bench/ is scripts, not a package), for tests of its options and arithmetic."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_model_dir(model, tokenizer, folder: Path) -> Path:
    """Save a model and its tokenizer as one Hugging Face folder (what the stages load)."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on busy cores two threads run ~50× slower.

    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny 4-layer BERT classifier with its tokenizer: usable as `teacher.model`."""
    return save_model_dir(make_tiny_bert(len(tiny_tokenizer)), tiny_tokenizer, tmp_path_factory.mktemp("tiny_teacher"))


TINY_PARAMS = {  # the real params.yaml shrunk to a tiny teacher and relaxed gates: a pipeline in seconds
    # fp32 whatever the CPU: these copies run in subprocesses (dvc, Prefect), out of reach of
    # auto_precision_is_fp32, and bf16 on a tiny model can leave a changed parameter without effect
    "base": {"precision": "fp32"},
    "ingest": {"max_rows": 300},
    "teacher": {"epochs": 1, "min_accuracy": 0.0},
    "distill": {"epochs": 1},
    "evaluate": {"min_retention": 0.0, "latency_runs": 5, "warmup_runs": 1, "throughput_batches": 1},
}


@pytest.fixture(scope="session")
def make_repo_copy(tiny_teacher_dir):
    """A factory: `make(dest)` copies the repo's files (tracked and untracked, not ignored) into a
    new git repo at `dest`, without dvc.lock, with params shrunk by TINY_PARAMS to the tiny teacher."""
    import shutil
    import subprocess

    import yaml

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def make(dest: Path) -> Path:
        def ls(*args: str) -> list[str]:
            return subprocess.run(["git", "ls-files", *args], cwd=repo, capture_output=True, text=True,
                                  check=True).stdout.split()

        tracked = set(ls("-c"))
        # Uncommitted code is copied too, but not a run's untracked outputs (after `make run`:
        # models/registry.json, reports/*.json, DVC's .gitignore files): a copy starts with no run.
        outputs = ("data/", "models/", "reports/", "runs/")
        files = [f for f in ls("-co", "--exclude-standard") if f in tracked or not f.startswith(outputs)]
        for rel in files:
            if (repo / rel).is_file() and rel != "dvc.lock":
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / rel, dest / rel)
        params = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in TINY_PARAMS.items():
            params[section].update(values)
        params["teacher"]["model"] = str(tiny_teacher_dir)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
            subprocess.run(["git", *args], cwd=dest, env=env, capture_output=True, check=True)
        return dest

    return make


@pytest.fixture
def repo_copy(tmp_path, make_repo_copy) -> Path:
    """The repo in a throw-away git repo at tmp_path/repo, shrunk to a tiny teacher (see make_repo_copy)."""
    return make_repo_copy(tmp_path / "repo")


# A tiny workspace after one pipeline run, for the continual-learning tests (tests/retrain, tests/flows):
# movie-review splits, a tiny teacher, its 2-layer student in production as version 1, a production
# log of tweets and a labelled tweet batch waiting in data/incoming/labelled/.
TINY_RETRAIN = {  # seconds, not minutes; gates open unless a test closes one
    "retrain": {"min_new_labelled": 20, "teacher_epochs": 1, "student_epochs": 1, "batch_size": 16,
                "min_teacher_confidence": 0.0, "min_gain": -1.0, "max_forgetting": 1.0,
                "teacher_max_forgetting": 1.0, "push": False, "max_unlabelled": 60},
    "evaluate": {"min_retention": 0.0},
    "base": {"max_length": 32},
    "score": {"settle_seconds": 0},  # the labelled batches a test writes are complete: no settle wait
}


def embedded_sample(name: str, rows: int, seed: int):
    from tasks.infra.embedded import read_embedded

    frame = read_embedded(name).sample(rows, random_state=seed).reset_index(drop=True)
    return frame[["text", "label"]]


@pytest.fixture
def retrain_ws(request, tmp_path, tiny_tokenizer, tiny_teacher_dir) -> Path:
    """The workspace root (described above); params.yaml is the repo's.

    Parametrised indirectly with "static" or "pruned", production is a static student of the teacher
    (model2vec, 16 dims) or the 2-layer student with its vocabulary pruned to the train split's tokens.
    """
    import shutil

    import numpy as np
    import pandas as pd

    from tasks.core.student import build_student
    from tasks.models.loading import load_classifier
    from tasks.lifecycle.registry import transaction
    from tasks.infra.prodlog import write_part
    from tasks.production.score import ProductionModel, log_rows
    from tasks.infra.storage import Paths, write_json

    root = tmp_path / "ws"
    paths = Paths(root)
    paths.processed.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", root / "params.yaml")
    movies = embedded_sample("movies", 200, 0).assign(label=lambda f: (f["label"] == "positive").astype("int64"))
    for split, frame in (("train", movies.iloc[:120]), ("val", movies.iloc[120:160]), ("test", movies.iloc[160:])):
        frame.reset_index(drop=True).to_parquet(paths.split(split))
    write_json(paths.summary, {"labels": ["negative", "positive"], "data_hash": "movies"})
    shutil.copytree(tiny_teacher_dir, paths.teacher)
    teacher, _ = load_classifier(str(paths.teacher), ["negative", "positive"])
    kind, tokenizer = getattr(request, "param", "transformer"), tiny_tokenizer
    if kind == "static":
        from tasks.models.static import static_from_teacher

        student = static_from_teacher(teacher, tiny_tokenizer, ["negative", "positive"], 16, 0, True)
    else:
        student = build_student(teacher, [0, 2])
    if kind == "pruned":
        from tasks.core.data import make_dataset
        from tasks.models.vocab import prune_vocabulary

        data = make_dataset(tiny_tokenizer, pd.read_parquet(paths.split("train"))["text"].tolist(), None, 32)
        student, tokenizer, _ = prune_vocabulary(student, tiny_tokenizer, data)
    student.save_pretrained(paths.student)
    tokenizer.save_pretrained(paths.student)
    entry = {"version": 1, "time": "2026-01-01T00:00:00+00:00", "promoted": True, "reason": "first",
             "trigger": "pipeline", "parent": None}
    with transaction(paths, "test workspace") as txn:  # archived, installed and registered as version 1
        txn.add(entry, paths.student)
    batch = embedded_sample("tweets", 80, 1)
    (root / "data" / "incoming" / "labelled").mkdir(parents=True)
    batch.to_csv(root / "data" / "incoming" / "labelled" / "tweets-1.csv", index=False)
    model = ProductionModel(tiny_tokenizer, None, ["negative", "positive"], 1, entry["archive_hash"], 32)
    texts = embedded_sample("tweets", 120, 2)["text"].tolist()
    rows = log_rows(model, texts, np.tile([0.4, 0.6], (len(texts), 1)).astype("float32"), "stream.csv")
    write_part(paths, rows, "stream", rows["time"].iloc[0].date())
    return root


@pytest.fixture
def tiny_retrain_params() -> dict:
    """TINY_RETRAIN, for test modules that cannot import this conftest by name."""
    import copy

    return copy.deepcopy(TINY_RETRAIN)


@pytest.fixture
def retrain_cfg(retrain_ws):
    from tasks.infra.config import load_config

    return load_config(retrain_ws / "params.yaml", TINY_RETRAIN)
