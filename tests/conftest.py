"""Shared fixtures: tiny models built from a config in code and a tokenizer trained here.

Nothing is ever downloaded: HF_HUB_OFFLINE is forced on for the whole session.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CORPUS = [
    "a great film with a wonderful cast", "an awful boring movie", "the plot is dull and slow",
    "brilliant acting and a moving story", "i loved every minute of it", "a waste of time",
    "the best film of the year", "terrible script and bad jokes", "charming funny and warm",
    "painfully long and forgettable",
]


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
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, capture_output=True,
                               text=True, check=True).stdout.split()
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
