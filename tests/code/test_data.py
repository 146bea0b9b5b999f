"""Code tests of batching: length-grouped batches and dynamic padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.core.data import IGNORE_LABEL, Collator, LengthGroupedBatches, TokenDataset, make_dataset

N, BATCH, GROUP = 1003, 16, 10  # not a multiple of the batch size: the last batch is short


@pytest.fixture(scope="module")
def lengths() -> np.ndarray:
    return np.random.default_rng(0).integers(3, 120, size=N)


def batches(lengths: np.ndarray, epoch: int = 0, skip: int = 0, seed: int = 7, **kwargs) -> list[list[int]]:
    sampler = LengthGroupedBatches(lengths, BATCH, seed=seed, group=GROUP, **kwargs)
    sampler.set_epoch(epoch, skip=skip)
    out = list(sampler)
    assert len(sampler) == len(out)  # what the loop's progress bar and schedule count on
    return out


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_row_once_per_epoch(lengths, shuffle):
    for epoch in range(3):
        flat = np.concatenate(batches(lengths, epoch, shuffle=shuffle))
        assert len(flat) == N
        assert np.array_equal(np.sort(flat), np.arange(N))
        got = batches(lengths, epoch, shuffle=shuffle)
        assert all(len(b) <= BATCH for b in got) and len(got) == -(-N // BATCH)


def test_order_is_fixed_by_seed_and_epoch(lengths):
    assert batches(lengths, epoch=2) == batches(lengths, epoch=2)
    assert batches(lengths, epoch=0) != batches(lengths, epoch=1)
    assert batches(lengths, epoch=0, seed=7) != batches(lengths, epoch=0, seed=8)


def test_batches_are_length_homogeneous(lengths):
    def mean_spread(groups):
        return np.mean([np.ptp(lengths[np.asarray(g)]) for g in groups])

    grouped = batches(lengths)
    perm = np.random.default_rng(1).permutation(N)
    random = [perm[i:i + BATCH] for i in range(0, N, BATCH)]
    # Random batches of 16 from lengths uniform in 3..119 spread ~100 tokens; sorted
    # mega-batches of 160 rows cut that to a few tokens.
    assert mean_spread(random) > 80
    assert mean_spread(grouped) < 0.2 * mean_spread(random)


def test_evaluation_order_is_longest_first(lengths):
    flat = np.concatenate(batches(lengths, shuffle=False))
    assert np.all(np.diff(lengths[flat]) <= 0)


@pytest.mark.parametrize("skip", [0, 1, 5, 63, 100])
def test_skip_drops_exactly_the_first_batches(lengths, skip):
    full = batches(lengths, epoch=3)
    assert batches(lengths, epoch=3, skip=skip) == full[skip:]


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_split_every_global_batch(lengths, world):
    """Under DDP each global batch is split by rows across ranks: same steps as one process."""
    shards = [batches(lengths, epoch=1, rank=r, world=world) for r in range(world)]
    single = batches(lengths, epoch=1)
    counts = {len(s) for s in shards}
    assert len(counts) == 1 and counts.pop() == len(single)  # N % BATCH = 11 >= world: nothing dropped
    for step, global_batch in enumerate(single):
        parts = [shards[r][step] for r in range(world)]
        assert sorted(sum(parts, [])) == sorted(global_batch)  # disjoint, and together the whole batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    sampler = LengthGroupedBatches(lengths, BATCH, seed=0, rank=1, world=world)
    assert len(sampler) == len(single)


def test_batches_smaller_than_the_world_are_dropped():
    lengths = np.arange(1, 34)  # 33 rows, batch 16: the last batch has a single row
    two = [list(LengthGroupedBatches(lengths, 16, seed=0, rank=r, world=2)) for r in range(2)]
    assert [len(s) for s in two] == [2, 2]
    assert len(LengthGroupedBatches(lengths, 16, seed=0, rank=0, world=2)) == 2


def test_rank_shards_with_skip(lengths):
    shard = batches(lengths, epoch=1, rank=1, world=2)
    assert batches(lengths, epoch=1, skip=4, rank=1, world=2) == shard[4:]


def test_collator_pads_to_longest_row_with_a_mask():
    rows = [(np.array([5, 6, 7], dtype=np.int32), 1, 10), (np.array([8], dtype=np.int32), IGNORE_LABEL, 3),
            (np.array([9, 10, 11, 12, 13], dtype=np.int32), 0, 0)]
    out = Collator(pad_id=0)(rows)
    assert out["input_ids"].dtype == torch.long and out["attention_mask"].dtype == torch.long
    assert out["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0], [9, 10, 11, 12, 13]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert out["labels"].tolist() == [1, IGNORE_LABEL, 0]
    assert out["index"].tolist() == [10, 3, 0]


def test_collator_uses_the_pad_id_and_no_extra_width():
    out = Collator(pad_id=99)([(np.array([1, 2], dtype=np.int32), 0, 0), (np.array([3, 4], dtype=np.int32), 1, 1)])
    assert out["input_ids"].shape == (2, 2) and out["attention_mask"].all()
    out = Collator(pad_id=99)([(np.array([1, 2], dtype=np.int32), 0, 0), (np.array([3], dtype=np.int32), 1, 1)])
    assert out["input_ids"][1].tolist() == [3, 99]


def test_token_dataset_rows_labels_and_lengths():
    data = TokenDataset([[1, 2, 3], [4]], [1, 0])
    ids, label, index = data[1]
    assert ids.tolist() == [4] and label == 0 and index == 1
    assert data.lengths.tolist() == [3, 1] and data.real_tokens == 4
    assert TokenDataset([[1], [2]]).labels.tolist() == [IGNORE_LABEL, IGNORE_LABEL]
    with pytest.raises(ValueError, match="2 texts but 3 labels"):
        TokenDataset([[1], [2]], [0, 1, 0])


def test_make_dataset_truncates_without_padding(tiny_tokenizer):
    data = make_dataset(tiny_tokenizer, ["film", "a great film with a wonderful cast and a moving story"],
                        [1, 1], max_length=8)
    assert data.lengths.tolist() == [3, 8]  # [CLS] film [SEP]; the long text cut at 8
    assert data.ids[0][0] == tiny_tokenizer.cls_token_id and data.ids[1][-1] == tiny_tokenizer.sep_token_id
    assert tiny_tokenizer.pad_token_id not in data.ids[0].tolist()
