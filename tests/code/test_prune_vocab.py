"""Vocabulary pruning (issue 23, `distill.prune_vocab`): the transfer set's tokens kept, ids remapped, a round trip.

Tiny models only: a 4-layer random BERT and tokenizers trained in the test (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from tasks.cli import main
from tasks.core.data import make_dataset
from tasks.core.student import build_student
from tasks.infra.errors import ConfigError
from tasks.models.loading import load_classifier, load_tokenizer, save_model
from tasks.infra.storage import Paths, write_json
from tasks.models.static import build_static
from tasks.models.vocab import check_prunable, is_pruned, prune_vocabulary, unprune
from tests.conftest import CORPUS, TINY_PARAMS, make_tiny_bert

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
TRANSFER, UNSEEN = CORPUS[:6], CORPUS[6:] + ["zzzq qqzz", "filmic acting"]


def _logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        return model.eval()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


@pytest.fixture(scope="module")
def pruned(tiny_tokenizer, tmp_path_factory):
    """A 2-layer student of the tiny teacher, pruned on TRANSFER, saved and loaded back."""
    teacher = make_tiny_bert(len(tiny_tokenizer))
    student = build_student(teacher, [0, 2])
    data = make_dataset(tiny_tokenizer, TRANSFER, None, 32)
    model, tokenizer, info = prune_vocabulary(copy.deepcopy(student), tiny_tokenizer, data)
    folder = tmp_path_factory.mktemp("pruned")
    save_model(model, tokenizer, folder)
    loaded, head_ready = load_classifier(str(folder), ["negative", "positive"])
    return teacher, student, loaded, load_tokenizer(str(folder)), info, head_ready


def test_pruned_student_keeps_only_the_transfer_tokens_and_loads_back(pruned, tiny_tokenizer):
    _, _, model, tokenizer, info, head_ready = pruned
    assert head_ready and is_pruned(model)
    used = {t for text in TRANSFER for t in tiny_tokenizer.tokenize(text)}
    assert set(tokenizer.get_vocab()) == used | set(tiny_tokenizer.all_special_tokens)
    assert len(tokenizer) == info["vocab_kept"] == model.config.vocab_size < info["vocab_from"] == len(tiny_tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.convert_ids_to_tokens(tokenizer("a waste")["input_ids"])[::len(tokenizer("a waste")["input_ids"]) - 1] \
        == ["[CLS]", "[SEP]"]  # the post-processor's special ids were renumbered with them


def test_transfer_texts_tokenise_the_same_and_get_the_same_logits(pruned, tiny_tokenizer):
    _, student, model, tokenizer, _, _ = pruned
    for text in TRANSFER:
        assert tokenizer.tokenize(text) == tiny_tokenizer.tokenize(text)
    assert torch.allclose(_logits(model, tokenizer, TRANSFER), _logits(student, tiny_tokenizer, TRANSFER), atol=1e-5)


def test_an_unseen_word_becomes_its_surviving_pieces_or_unk(pruned, tiny_tokenizer):
    _, _, _, tokenizer, _, _ = pruned
    kept = set(tokenizer.get_vocab())
    for text in UNSEEN:
        for word in text.split():
            before, after = tiny_tokenizer.tokenize(word), tokenizer.tokenize(word)
            if set(before) <= kept:
                assert after == before  # every piece survived: the same pieces
            else:
                assert after == ["[UNK]"] or "".join(p.removeprefix("##") for p in after) == word
    assert tokenizer.tokenize("zzzq") == ["[UNK]"]


def test_unprune_puts_the_student_back_on_the_teachers_vocabulary(pruned, tiny_tokenizer):
    teacher, student, model, tokenizer, _, _ = pruned
    back = unprune(copy.deepcopy(model), tokenizer, teacher, tiny_tokenizer)
    assert not is_pruned(back) and back.config.vocab_size == len(tiny_tokenizer)
    texts = TRANSFER + UNSEEN  # untrained rows are the teacher's, as the student's were
    assert torch.allclose(_logits(back, tiny_tokenizer, texts), _logits(student, tiny_tokenizer, texts), atol=1e-5)


def test_a_static_student_prunes_with_its_special_ids(tiny_tokenizer):
    static = build_static(torch.randn(len(tiny_tokenizer), 8).numpy(), tiny_tokenizer, ["negative", "positive"])
    data = make_dataset(tiny_tokenizer, TRANSFER, None, 32)
    model, tokenizer, _ = prune_vocabulary(copy.deepcopy(static), tiny_tokenizer, data)
    assert model.config.skip_token_ids == sorted(set(tokenizer.all_special_ids))
    assert torch.allclose(_logits(model, tokenizer, TRANSFER), _logits(static, tiny_tokenizer, TRANSFER), atol=1e-5)


def _bpe_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=90, special_tokens=["[PAD]", "[UNK]", "[CLS]",
                                                                                         "[SEP]", "[MASK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def test_a_tokenizer_without_a_vocabulary_file_is_one_line():
    with pytest.raises(ConfigError) as err:
        check_prunable(_bpe_tokenizer(), "the teacher")
    assert str(err.value).startswith("distill.prune_vocab: the tokenizer of the teacher has no WordPiece vocabulary "
                                     "file (vocab.txt)") and "\n" not in str(err.value)


def _distill_workspace(tmp_path: Path, tokenizer, prune: bool) -> list[str]:
    """Processed movie splits and a tiny teacher with `tokenizer`: what the distill stage reads."""
    from tasks.ingest import read_embedded

    root = tmp_path / "ws"
    paths = Paths(root)
    paths.processed.mkdir(parents=True)
    rows = read_embedded("movies").sample(90, random_state=0).reset_index(drop=True)
    rows["label"] = (rows["label"] == "positive").astype("int64")
    for split, part in (("train", rows.iloc[:60]), ("val", rows.iloc[60:75]), ("test", rows.iloc[75:])):
        part[["text", "label"]].reset_index(drop=True).to_parquet(paths.split(split))
    write_json(paths.summary, {"labels": ["negative", "positive"]})
    save_model(make_tiny_bert(len(tokenizer)), tokenizer, paths.teacher)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY_PARAMS.items():
        params[section].update(values)
    params["teacher"]["model"] = str(paths.teacher)
    params["base"]["max_length"] = 32
    params["distill"].update({"prune_vocab": prune, "student_layers": 2})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ["--params", str(root / "params.yaml"), "--root", str(root)]


def test_distill_prunes_the_saved_student(tmp_path, tiny_tokenizer):
    args = _distill_workspace(tmp_path, tiny_tokenizer, prune=True)
    assert main([*args, "distill"]) == 0
    report = json.loads((tmp_path / "ws" / "reports" / "distill.json").read_text())
    assert report["vocab"]["vocab_kept"] < report["vocab"]["vocab_from"] == len(tiny_tokenizer)
    assert len(load_tokenizer(str(tmp_path / "ws" / "models" / "distilled"))) == report["vocab"]["vocab_kept"]


def test_distill_refuses_pruning_a_bpe_tokenizer_in_one_line_before_training(tmp_path, capsys):
    args = _distill_workspace(tmp_path, _bpe_tokenizer(), prune=True)
    assert main([*args, "distill"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: distill.prune_vocab: the tokenizer of the teacher (models/teacher) has no "
                              "WordPiece vocabulary file")
    assert not (tmp_path / "ws" / "models" / "distilled").exists()
