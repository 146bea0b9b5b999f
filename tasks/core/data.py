"""Tokenised datasets, dynamic padding and length-grouped batching.

Short texts dominate review and support-ticket data (the default's median is 18 words), so
padding each batch only to its own longest row, and grouping rows of similar length into the
same batch, removes most of the work a fixed `max_length` padding would do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

IGNORE_LABEL = -100  # rows without a label (unlabelled transfer text): soft targets only


class TokenDataset(Dataset):
    """Token ids of each row, its label (or IGNORE_LABEL) and its row index (the cache key)."""

    def __init__(self, ids: Sequence[Sequence[int]], labels: Sequence[int] | None = None):
        self.ids = [np.asarray(x, dtype=np.int32) for x in ids]
        self.labels = (np.asarray(labels, dtype=np.int64) if labels is not None
                       else np.full(len(self.ids), IGNORE_LABEL, dtype=np.int64))
        if len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.ids)} texts but {len(self.labels)} labels")
        self.lengths = np.array([len(x) for x in self.ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        return self.ids[i], int(self.labels[i]), i

    @property
    def real_tokens(self) -> int:
        """Tokens in the data, padding excluded."""
        return int(self.lengths.sum())


def tokenize(tokenizer, texts: Sequence[str], max_length: int, chunk: int = 2048) -> list[list[int]]:
    """Token ids for each text, truncated to `max_length`, without padding."""
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        enc = tokenizer(list(texts[start:start + chunk]), truncation=True, max_length=max_length,
                        padding=False, return_attention_mask=False, return_token_type_ids=False)
        out.extend(enc["input_ids"])
    return out


def make_dataset(tokenizer, texts: Sequence[str], labels: Sequence[int] | None, max_length: int) -> TokenDataset:
    """Tokenise `texts` and wrap them with their labels."""
    return TokenDataset(tokenize(tokenizer, texts, max_length), labels)


class Collator:
    """Pads a batch to its own longest row.

    Returns a dict: input_ids [B, L] int64, attention_mask [B, L] int64, labels [B], index [B].
    """

    # Not transformers.DataCollatorWithPadding, although it pads the same and carries `labels`
    # (IGNORE_LABEL included) and `index` through unchanged (checked): it needs a tokenizer
    # object where the core, the ONNX predictor (tasks/production/export.py) and the speed benchmark pass
    # only a pad id; it takes dict rows, not TokenDataset's (ids, label, index) tuples; and its
    # tokenizer.pad turns every row into Python lists, about 3x slower for a batch of 64 rows.

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[tuple[np.ndarray, int, int]]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for ids, _, _ in batch)
        input_ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, (ids, _, _) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.from_numpy(ids.astype(np.int64))
            mask[row, :len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": torch.tensor([label for _, label, _ in batch], dtype=torch.long),
            "index": torch.tensor([i for _, _, i in batch], dtype=torch.long),
        }


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of rows of similar length, in a random order fixed by (seed, epoch).

    Rows are shuffled, cut into mega-batches of `group` batches, each mega-batch sorted by length
    and cut into batches; the batch order is shuffled again. Under several processes each rank
    takes its share of the rows of every batch (batches with fewer rows than ranks are dropped),
    so all ranks take the same number of steps.
    `skip` drops the first batches of an epoch: how a resumed run continues mid-epoch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, shuffle: bool = True,
                 group: int = 50, rank: int = 0, world: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.shuffle, self.group = batch_size, seed, shuffle, group
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch's order, and how many of its first batches to leave out."""
        self.epoch, self.skip = epoch, skip

    def _all_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:  # evaluation: longest first, so a memory problem shows at once
            order = np.argsort(-self.lengths, kind="stable")
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n)
        mega = self.batch_size * self.group
        batches = []
        for start in range(0, n, mega):
            chunk = order[start:start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _rank_batches(self) -> list[np.ndarray]:
        batches = self._all_batches()
        if self.world > 1:
            # Each global batch is split by rows across ranks, so `batch_size` stays the global
            # batch and a DDP run takes the same optimiser steps as a single process would.
            batches = [b[self.rank::self.world] for b in batches if len(b) >= self.world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._rank_batches()[self.skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        n, size = len(self.lengths), self.batch_size
        total = math.ceil(n / size)
        if self.world > 1:
            total = n // size + (1 if n % size >= self.world else 0)
        return max(total - self.skip, 0)


def make_loader(data: TokenDataset, batch_size: int, pad_id: int, seed: int, shuffle: bool,
                device: torch.device, rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    """A loader of length-grouped, dynamically padded batches (this rank's share under DDP)."""
    sampler = LengthGroupedBatches(data.lengths, batch_size, seed, shuffle=shuffle, rank=rank, world=world)
    # Its own generator: otherwise each new iterator draws a seed from the global RNG, and a
    # resumed run's dropout masks would differ from an uninterrupted run's.
    return torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=Collator(pad_id),
                                       pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(seed))
