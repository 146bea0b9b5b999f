"""The teacher-output cache: the teacher runs once over the transfer set, not once per epoch.

Per row it stores the teacher's logits (float32 [N, C]) and, when hidden-state alignment uses
pooled states, the mean-pooled hidden state of each mapped teacher layer (float16 [N, K, H]).
Per-token hidden states are not cached: at 64 tokens × 384 floats per layer they would take
~100 KB a row. The files are `.npy` opened memory-mapped, so a large transfer set is read
lazily, batch by batch, and never held in memory at once.

The key hashes the teacher's saved folder (its weights, config and tokenizer files), the exact
token ids of the transfer set (so the text, the tokenizer and max_length all count), the layers
stored and the precision: a change to any of them misses, anything else hits. The distill stage
stores the pooled states of *every* teacher layer and reads the mapped ones through
`TeacherOutputs.select`, so one entry serves every student depth and layer map (a sweep runs the
teacher once for all its trials).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.core.data import TokenDataset, make_loader
from tasks.core.dist import barrier, dist_info
from tasks.core.loss import mean_pool
from tasks.core.precision import autocast, precision_name

log = logging.getLogger("kd")


def fingerprint_tokens(data: TokenDataset) -> str:
    """sha256 of every row's token ids, row by row."""
    h = hashlib.sha256()
    for ids in data.ids:
        h.update(np.int64(len(ids)).tobytes())
        h.update(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
    return h.hexdigest()


def cache_key(teacher_fp: str, data_fp: str, layer_map: list[int] | None, precision: str = "fp32") -> str:
    """The cache entry's name: 24 hex characters of sha256 over everything the outputs depend on.

    Args:
        teacher_fp: a hash of the teacher's saved folder (the pipeline uses tasks.infra.storage.hash_dir).
        data_fp: the transfer set's `fingerprint_tokens`.
        layer_map: the teacher layers whose pooled states are stored; None for logits only.
        precision: the resolved compute precision, "fp32" or "bf16" (tasks.core.precision.precision_name):
            a bf16 run's logits must never serve an fp32 run, nor the other way round.
    """
    spec = json.dumps({"teacher": teacher_fp, "data": data_fp, "pooled_layers": layer_map,
                       "precision": precision}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


@dataclass
class TeacherOutputs:
    """Memory-mapped cached outputs, one shard per rank that built them.

    Row i of the transfer set lives in shard i % world at position i // world; with one shard
    (a single-process build) that is simply row i of `logits` [N, C] and `pooled` [N, K, H].
    """

    logit_shards: list[np.ndarray]
    pooled_shards: list[np.ndarray] | None
    layers: list[int] | None = None  # positions on the stored K axis that `pooled`/`take` return; None: all

    def select(self, layers: list[int]) -> TeacherOutputs:
        """The same entry seen through `layers`: positions on its stored layer axis (with every
        teacher layer stored, position i is teacher layer i, so `layers` is the student's layer map)."""
        if self.pooled_shards is not None and any(not 0 <= i < self.pooled_shards[0].shape[1] for i in layers):
            raise ValueError(f"layers {layers}: the entry stores {self.pooled_shards[0].shape[1]} layers")
        return replace(self, layers=list(layers))

    @property
    def logits(self) -> np.ndarray:
        """All logits [N, C] of a single-shard entry."""
        return self._only(self.logit_shards)

    @property
    def pooled(self) -> np.ndarray | None:
        """All pooled states [N, K, H] of a single-shard entry (K: the selected layers), or None when not cached."""
        if self.pooled_shards is None:
            return None
        pooled = self._only(self.pooled_shards)
        return pooled if self.layers is None else pooled[:, self.layers]

    @staticmethod
    def _only(shards: list[np.ndarray]) -> np.ndarray:
        if len(shards) != 1:
            raise ValueError(f"cache entry has {len(shards)} shards; use take()")
        return shards[0]

    def _gather(self, shards: list[np.ndarray], index: np.ndarray) -> np.ndarray:
        world = len(shards)
        out = np.empty((len(index),) + shards[0].shape[1:], dtype=np.float32)
        for shard in range(world):
            where = np.nonzero(index % world == shard)[0]
            if len(where):
                pos = index[where] // world
                order = np.argsort(pos)  # sorted reads are sequential on disk
                out[where[order]] = shards[shard][pos[order]]
        return out

    def take(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows of a batch, as float32 tensors on `device`.

        Args:
            index: [B] row indices into the transfer set.
            device: where the tensors go.

        Returns:
            logits [B, C] and pooled states [B, K, H] (or None).
        """
        rows = index.numpy()
        logits = torch.from_numpy(self._gather(self.logit_shards, rows)).to(device, non_blocking=True)
        pooled = None
        if self.pooled_shards is not None:
            states = self._gather(self.pooled_shards, rows)
            states = states if self.layers is None else np.ascontiguousarray(states[:, self.layers])
            pooled = torch.from_numpy(states).to(device, non_blocking=True)
        return logits, pooled


def _shard_file(kind: str, rank: int, world: int) -> str:
    return f"{kind}.npy" if world == 1 else f"{kind}.{rank}-of-{world}.npy"


# no_grad, not inference_mode: inference tensors cannot be saved for the student's backward.
@torch.no_grad()
def teacher_forward(teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
                    layer_map: list[int] | None) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
    """One teacher pass without gradients.

    Returns:
        logits [B, C]; pooled states [B, K, H] of the mapped layers (or None); the raw hidden
        states tuple (or None) for per-token alignment.
    """
    out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  output_hidden_states=layer_map is not None)
    if layer_map is None:
        return out.logits, None, None
    # hidden_states[0] is the embedding output; layer i's output is hidden_states[i + 1].
    pooled = torch.stack([mean_pool(out.hidden_states[i + 1], batch["attention_mask"]) for i in layer_map], dim=1)
    return out.logits, pooled, out.hidden_states


class LogitCache:
    """One cache entry: a folder `<root>/<key>/` with logits.npy, pooled.npy and meta.json."""

    def __init__(self, root: str | Path, key: str):
        self.root, self.key = Path(root), key
        self.path = self.root / key

    def exists(self) -> bool:
        """An entry exists only once complete: it is renamed into place after its last write."""
        return (self.path / "meta.json").is_file()

    def load(self) -> TeacherOutputs:
        """Open the entry's shards memory-mapped."""
        world = json.loads((self.path / "meta.json").read_text()).get("world", 1)
        logits = [np.load(self.path / _shard_file("logits", r, world), mmap_mode="r") for r in range(world)]
        pooled = None
        if (self.path / _shard_file("pooled", 0, world)).exists():
            pooled = [np.load(self.path / _shard_file("pooled", r, world), mmap_mode="r") for r in range(world)]
        return TeacherOutputs(logits, pooled)

    def build(self, teacher: torch.nn.Module, data: TokenDataset, pad_id: int, batch_size: int,
              device: torch.device, layer_map: list[int] | None, dtype: torch.dtype | None = None) -> TeacherOutputs:
        """Run the teacher over `data` once and write the entry atomically.

        Under several processes each rank computes rows rank, rank + world, ... into its own
        shard; rank 0 renames the finished folder into place once every rank is done.

        Args:
            teacher: in eval mode, on `device`.
            data: the transfer set; row i of the cache is row i of `data`.
            pad_id: the tokenizer's pad id.
            batch_size: inference batch size.
            device: where the teacher runs.
            layer_map: teacher layers whose pooled states are stored; None stores logits only.
            dtype: the autocast dtype (tasks.core.precision.resolve_precision), None for fp32; the
                entry's key must name the same precision.
        """
        rank, world = dist_info()
        # One temporary folder all ranks agree on (a random suffix would differ between them).
        tmp = self.root / f".{self.key}.tmp-{world}"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        try:
            rows = range(rank, len(data), world)
            shard = data if world == 1 else TokenDataset([data.ids[i] for i in rows], data.labels[list(rows)])
            self._fill(tmp, rank, world, teacher, shard, pad_id, batch_size, device, layer_map, dtype)
            barrier()
            if rank == 0:
                (tmp / "meta.json").write_text(json.dumps({"rows": len(data), "world": world, "layer_map": layer_map,
                                                           "precision": precision_name(dtype)}))
                if self.path.exists():
                    shutil.rmtree(self.path)
                os.replace(tmp, self.path)
            barrier()
        finally:
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
        return self.load()

    @staticmethod
    def _fill(folder: Path, rank: int, world: int, teacher: torch.nn.Module, data: TokenDataset, pad_id: int,
              batch_size: int, device: torch.device, layer_map: list[int] | None, dtype: torch.dtype | None) -> None:
        loader = make_loader(data, batch_size, pad_id, seed=0, shuffle=False, device=device)
        logits_mm = pooled_mm = None
        teacher.eval()
        for batch in tqdm(loader, desc="teacher logits", unit="batch", mininterval=2, disable=rank != 0):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device.type, dtype):
                logits, pooled, _ = teacher_forward(teacher, batch, layer_map)
            if logits_mm is None:  # shapes are known after the first batch
                logits_mm = np.lib.format.open_memmap(folder / _shard_file("logits", rank, world), "w+", np.float32,
                                                      (len(data), logits.shape[-1]))
                if pooled is not None:
                    pooled_mm = np.lib.format.open_memmap(folder / _shard_file("pooled", rank, world), "w+", np.float16,
                                                          (len(data),) + tuple(pooled.shape[1:]))
            rows = batch["index"].cpu().numpy()
            logits_mm[rows] = logits.float().cpu().numpy()
            if pooled_mm is not None:
                pooled_mm[rows] = pooled.float().cpu().numpy().astype(np.float16)
        for mm in (logits_mm, pooled_mm):
            if mm is not None:
                mm.flush()
        log.info("cached teacher outputs for %d rows", len(data))
