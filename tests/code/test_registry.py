"""tasks.lifecycle.registry: concurrent writers, the two locks, and what a transaction writes."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from tasks.infra import registry_view as V
from tasks.infra.locks import LockBusy
from tasks.lifecycle import registry as R
from tasks.infra.storage import Paths, hash_dir

# spawn, not fork: the children start clean (no torch threads or pytest state copied mid-flight).
CTX = multiprocessing.get_context("spawn")


def fake_model(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def write_many(root: str, writer: str, count: int, model_dir: str, start) -> None:
    """A writer process: `count` entries as fast as it can, every third one promoted (installed)."""
    paths = Paths(Path(root))
    start.wait(60)
    for i in range(count):
        with R.transaction(paths, f"writer {writer}") as txn:
            promoted = i % 3 == 0
            entry = R.new_entry(txn.next_version(), promoted, f"{writer}-{i}", trigger="test", source=writer,
                                parent=txn.production)
            txn.add(entry, Path(model_dir) if promoted else None)


def hold(root: str, lock: str, seconds: float, held) -> None:
    """Hold the cycle or the write lock for `seconds` in another process."""
    paths = Paths(Path(root))
    context = R.cycle_lock(paths, "retraining (drift)") if lock == "cycle" else R.transaction(paths, "slow writer")
    with context:
        held.set()
        time.sleep(seconds)


def start_holder(root: Path, lock: str, seconds: float):
    held = CTX.Event()
    proc = CTX.Process(target=hold, args=(str(root), lock, seconds, held))
    proc.start()
    assert held.wait(60), "the holder process never took the lock"
    return proc


def test_two_writers_at_once_lose_and_duplicate_nothing(tmp_path):
    count = 30
    models = {w: fake_model(tmp_path / f"student-{w}", w.encode() * 10) for w in ("a", "b")}
    start = CTX.Event()
    procs = [CTX.Process(target=write_many, args=(str(tmp_path), w, count, str(models[w]), start)) for w in models]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    registry = V.read_registry(Paths(tmp_path))
    versions = registry["versions"]
    assert [v["version"] for v in versions] == list(range(1, 2 * count + 1))  # none lost, none twice
    assert sorted(v["reason"] for v in versions) == sorted(f"{w}-{i}" for w in models for i in range(count))
    promoted = [v for v in versions if v["promoted"]]
    assert registry["production"] == promoted[-1]["version"]  # the last install is what the registry names
    stamp = json.loads((V.production_dir(Paths(tmp_path)) / V.STAMP).read_text())
    assert stamp["version"] == registry["production"]
    assert (V.production_dir(Paths(tmp_path)) / "model.safetensors").read_bytes() == models[stamp["source"]].joinpath(
        "model.safetensors").read_bytes()
    for v in promoted:  # every promoted version was archived whole, under its own number
        assert hash_dir(R.archive_dir(Paths(tmp_path), v["version"])) == v["archive_hash"]
        assert (R.archive_dir(Paths(tmp_path), v["version"]) / "model.safetensors").read_bytes() == \
            models[v["source"]].joinpath("model.safetensors").read_bytes()
    assert not list((tmp_path / "models").glob(".*.lock"))  # released: the lock files are gone


def test_a_writer_waits_for_the_write_lock_then_writes(tmp_path):
    holder = start_holder(tmp_path, "write", 1.5)
    start = time.monotonic()
    with R.transaction(Paths(tmp_path), "promote", wait_s=60) as txn:
        waited = time.monotonic() - start
        txn.add(R.new_entry(txn.next_version(), False, "after the wait", trigger="test", source="t", parent=None))
    holder.join(60)
    assert waited > 0.5 and [v["reason"] for v in V.read_registry(Paths(tmp_path))["versions"]] == ["after the wait"]


def test_a_writer_held_off_too_long_fails_with_one_line_naming_the_holder(tmp_path):
    holder = start_holder(tmp_path, "write", 10)
    try:
        with pytest.raises(LockBusy) as err, R.transaction(Paths(tmp_path), "promote", wait_s=0.3):
            pytest.fail("the lock was taken twice")
    finally:
        holder.kill()
        holder.join(60)
    message = str(err.value)
    assert "\n" not in message and err.value.exit_code == 2
    assert "models/.registry.lock: held for more than 0.3 s by pid " in message
    assert "slow writer; nothing was written by this promote, run it again" in message
    assert not V.registry_path(Paths(tmp_path)).exists()


def test_a_killed_holder_leaves_a_lock_anyone_can_take(tmp_path):
    holder = start_holder(tmp_path, "cycle", 60)
    holder.kill()
    holder.join(60)
    assert (tmp_path / "models" / ".retrain.lock").exists()  # the file outlives the process, its flock does not
    with R.cycle_lock(Paths(tmp_path), "retraining (manual)"):
        assert "retraining (manual)" in (tmp_path / "models" / ".retrain.lock").read_text()
    assert not (tmp_path / "models" / ".retrain.lock").exists()


def test_the_cycle_lock_refuses_a_second_cycle_with_a_dedicated_error(tmp_path):
    holder = start_holder(tmp_path, "cycle", 10)
    try:
        with pytest.raises(R.CycleRunning, match=r"another retraining or rollback is running \(pid \d+, since .*"
                                                 r"retraining \(drift\)\); this rollback to version 1 is skipped"):
            with R.cycle_lock(Paths(tmp_path), "rollback to version 1"):
                pass
        # the write lock is another lock: a writer is not held off by a running cycle
        with R.transaction(Paths(tmp_path), "promote", wait_s=0) as txn:
            assert txn.next_version() == 1
    finally:
        holder.kill()
        holder.join(60)


def test_transactions_do_not_nest(tmp_path):
    with R.transaction(Paths(tmp_path), "outer"):
        with pytest.raises(RuntimeError, match="would wait on itself"):
            with R.transaction(Paths(tmp_path), "inner"):
                pass


def test_a_transaction_names_a_production_that_moved(tmp_path):
    model = fake_model(tmp_path / "student", b"w")
    with R.transaction(Paths(tmp_path), "t") as txn:
        txn.add(R.new_entry(1, True, "first", trigger="pipeline", source="kdistill promote", parent=None), model)
        assert txn.moved_since(1) is None
        assert txn.moved_since(None) == ("production changed from version None to version 1 (kdistill promote) while "
                                         "this candidate was judged; it was never compared with version 1")
        with pytest.raises(ValueError, match="not the next one"):
            txn.add(R.new_entry(5, False, "skips a number", trigger="t", source="t", parent=1))
    assert [v["version"] for v in V.read_registry(Paths(tmp_path))["versions"]] == [1]
