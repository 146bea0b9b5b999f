"""Code tests of the teacher-output cache: what it stores, when it hits, and when it misses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

from tests.conftest import CORPUS, make_tiny_bert, save_model_dir
from tasks.infra.config import Config
from tasks.core.cache import LogitCache, cache_key, fingerprint_tokens
from tasks.core.data import TokenDataset, make_dataset
from tasks.core.loss import mean_pool
from tasks.distill import teacher_outputs
from tasks.infra.storage import Paths, hash_dir

LAYER_MAP = [0, 2]
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_teacher(vocab_size: int, seed: int = 0) -> BertForSequenceClassification:
    """A tiny BERT whose rows and layers give visibly different outputs.

    At BERT's init scale (std 0.02) every row's logits agree to ~1e-4 and successive layers
    barely move the states, so a cache with rows or layers out of order could pass unnoticed;
    weights ten times larger make each row and each layer distinct.
    """
    model = make_tiny_bert(vocab_size, layers=4, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(10.0)
    return model.eval()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return save_model_dir(make_teacher(len(tiny_tokenizer)), tiny_tokenizer, tmp_path_factory.mktemp("cache_teacher"))


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return BertForSequenceClassification.from_pretrained(teacher_dir).eval()


@pytest.fixture(scope="module")
def data(tiny_tokenizer) -> TokenDataset:
    # Lengths vary, so batches are padded and the cache's longest-first order differs from row order.
    texts = CORPUS + ["film", "a waste", "the plot is dull and slow and the acting is bad and long"]
    return make_dataset(tiny_tokenizer, texts, [i % 2 for i in range(len(texts))], max_length=32)


@pytest.fixture(scope="module")
def direct(teacher, data) -> tuple[np.ndarray, np.ndarray]:
    """Each row's logits and pooled mapped states, one unpadded row at a time, in dataset order."""
    logits, pooled = [], []
    with torch.no_grad():
        for ids in data.ids:
            x = torch.from_numpy(ids.astype(np.int64))[None]
            out = teacher(input_ids=x, output_hidden_states=True)
            logits.append(out.logits[0].numpy())
            pooled.append(np.stack([out.hidden_states[i + 1][0].mean(0).numpy() for i in LAYER_MAP]))
    return np.stack(logits), np.stack(pooled)


def build(root: Path, teacher, data, pad_id: int, layer_map):
    cache = LogitCache(root, "k" * 24)
    assert not cache.exists()
    out = cache.build(teacher, data, pad_id, batch_size=4, device=CPU, layer_map=layer_map)
    assert cache.exists()
    return cache, out


def test_build_stores_logits_in_dataset_order(tmp_path, teacher, data, direct, tiny_tokenizer):
    cache, _ = build(tmp_path, teacher, data, tiny_tokenizer.pad_token_id, None)
    loaded = cache.load()
    assert isinstance(loaded.logits, np.memmap) and loaded.pooled is None
    assert loaded.logits.shape == (len(data), 2) and loaded.logits.dtype == np.float32
    np.testing.assert_allclose(loaded.logits, direct[0], atol=1e-5, rtol=0)
    # Rows differ from one another, so a permuted cache could not pass the check above.
    assert np.abs(direct[0] - direct[0][::-1]).max() > 0.1
    # The entry was renamed into place: no temporary folder is left next to it.
    assert [p.name for p in tmp_path.iterdir()] == [cache.key]


def test_build_stores_pooled_states_of_mapped_layers(tmp_path, teacher, data, direct, tiny_tokenizer):
    cache, out = build(tmp_path, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP)
    loaded = cache.load()
    assert isinstance(loaded.pooled, np.memmap)
    assert loaded.pooled.shape == (len(data), len(LAYER_MAP), teacher.config.hidden_size)
    assert loaded.pooled.dtype == np.float16
    # float16 storage: ~3 significant digits; tiny-BERT states are LayerNorm'd, so |x| is ~1.
    np.testing.assert_allclose(loaded.pooled.astype(np.float32), direct[1], atol=5e-3, rtol=5e-3)
    np.testing.assert_allclose(loaded.logits, direct[0], atol=1e-5, rtol=0)
    # The two mapped layers are different states, so a swapped layer order would fail.
    assert np.abs(direct[1][:, 0] - direct[1][:, 1]).max() > 0.1


def test_take_returns_rows_in_batch_order(tmp_path, teacher, data, direct, tiny_tokenizer):
    _, out = build(tmp_path, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP)
    index = torch.tensor([7, 0, 12, 3])
    logits, pooled = out.take(index, CPU)
    assert logits.dtype == torch.float32 and pooled.dtype == torch.float32
    np.testing.assert_allclose(logits.numpy(), direct[0][[7, 0, 12, 3]], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pooled.numpy(), direct[1][[7, 0, 12, 3]], atol=5e-3, rtol=5e-3)


def test_mean_pool_matches_unpadded_mean(teacher, data, direct, tiny_tokenizer):
    """The cache pools padded batches; padding must not leak into the mean."""
    from tasks.core.data import Collator

    batch = Collator(tiny_tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    with torch.no_grad():
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    pooled = mean_pool(out.hidden_states[1], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(pooled, direct[1][:, 0], atol=1e-4)


def test_cache_key_depends_on_teacher_tokens_and_layer_map(tmp_path, teacher_dir, tiny_tokenizer, data):
    teacher_fp, data_fp = hash_dir(teacher_dir), fingerprint_tokens(data)
    key = cache_key(teacher_fp, data_fp, LAYER_MAP)
    # Stable: the same inputs, and a byte-identical copy of the teacher, give the same key.
    copy = tmp_path / "copy"
    shutil.copytree(teacher_dir, copy)
    assert cache_key(hash_dir(copy), fingerprint_tokens(data), list(LAYER_MAP)) == key
    assert len(key) == 24 and all(c in "0123456789abcdef" for c in key)
    # Teacher weights: same config and tokenizer, different weights.
    other = tmp_path / "other"
    make_teacher(len(tiny_tokenizer), seed=1).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    assert cache_key(hash_dir(other), data_fp, LAYER_MAP) != key
    # Token ids: one id of one row changes.
    ids = [x.copy() for x in data.ids]
    ids[5][1] += 1
    assert cache_key(teacher_fp, fingerprint_tokens(TokenDataset(ids, data.labels)), LAYER_MAP) != key
    # Row boundaries count, not only the concatenated ids.
    assert fingerprint_tokens(TokenDataset([[1, 2], [3]])) != fingerprint_tokens(TokenDataset([[1], [2, 3]]))
    # Labels are not inputs of the teacher: they do not change the key.
    assert fingerprint_tokens(TokenDataset(data.ids, 1 - data.labels)) == data_fp
    # Layer map, and logits only versus pooled states.
    assert cache_key(teacher_fp, data_fp, [0, 3]) != key
    assert cache_key(teacher_fp, data_fp, None) != key


@pytest.fixture
def stage(tmp_path, teacher_dir, teacher) -> tuple[Config, Paths]:
    """A config with caching on and pooled hidden states, and the tiny teacher at models/teacher."""
    cfg, paths = Config(), Paths(tmp_path)
    cfg.distill.eval_batch_size = 4
    assert cfg.distill.cache and cfg.distill.alpha_cos > 0 and cfg.distill.hidden_loss == "pooled"
    shutil.copytree(teacher_dir, paths.teacher)
    return cfg, paths


def outputs(cfg: Config, paths: Paths, *args):
    """The distill stage's call: its teacher folder and cache folder."""
    return teacher_outputs(cfg.distill, paths.teacher, paths.cache, *args)


def test_teacher_outputs_miss_then_hit(stage, teacher, data, direct, tiny_tokenizer):
    cfg, paths = stage
    first, state, key = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert state == "miss" and (paths.cache / key / "meta.json").is_file()
    second, state2, key2 = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert state2 == "hit" and key2 == key
    np.testing.assert_array_equal(second.logits, first.logits)
    np.testing.assert_allclose(second.logits, direct[0], atol=1e-5, rtol=0)
    assert second.pooled.shape == (len(data), len(LAYER_MAP), teacher.config.hidden_size)


def test_teacher_outputs_miss_after_teacher_changes(stage, teacher, data, tiny_tokenizer):
    cfg, paths = stage
    _, state, key = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert state == "miss"
    make_teacher(len(tiny_tokenizer), seed=5).save_pretrained(paths.teacher)  # fine-tuned teacher, say
    _, state, key2 = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert state == "miss" and key2 != key


def test_teacher_outputs_logits_only_without_hidden_alignment(stage, teacher, data, tiny_tokenizer):
    cfg, paths = stage
    _, _, pooled_key = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    cfg.distill.alpha_cos = 0.0
    out, state, key = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert state == "miss" and key != pooled_key and out.pooled is None
    cfg.distill.cache = False
    off = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert off == (None, "off", None)


def test_partial_entry_is_treated_as_missing(stage, teacher, data, direct, tiny_tokenizer):
    cfg, paths = stage
    _, _, key = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    # A crash mid-write: the folder is there, with a wrong logits file, but no meta.json.
    entry = paths.cache / key
    shutil.rmtree(entry)
    entry.mkdir()
    np.save(entry / "logits.npy", np.zeros((3, 2), dtype=np.float32))
    assert not LogitCache(paths.cache, key).exists()
    out, state, key2 = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    assert state == "miss" and key2 == key
    assert (entry / "meta.json").is_file()
    np.testing.assert_allclose(out.logits, direct[0], atol=1e-5, rtol=0)


def test_a_cycle_cache_elsewhere_keys_the_same_teacher_the_same(stage, tmp_path, teacher, data, direct, tiny_tokenizer):
    """Retraining keeps its cache inside the cycle's folder and its teacher elsewhere: the same bytes
    give the same key there, built once in that folder."""
    cfg, paths = stage
    _, _, key = outputs(cfg, paths, teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    cycle = tmp_path / "cycle"
    shutil.copytree(paths.teacher, cycle / "teacher")
    args = (teacher, data, tiny_tokenizer.pad_token_id, LAYER_MAP, CPU)
    out, state, key2 = teacher_outputs(cfg.distill, cycle / "teacher", cycle / "cache", *args, stage="retrain")
    assert (state, key2) == ("miss", key) and (cycle / "cache" / key / "meta.json").is_file()
    np.testing.assert_allclose(out.logits, direct[0], atol=1e-5, rtol=0)
    assert teacher_outputs(cfg.distill, cycle / "teacher", cycle / "cache", *args)[1] == "hit"
