"""Crash safety of the lifecycle as a property (issue 25 items 1-4): promote, rollback and a retraining cycle's
promotion are killed (SIGKILL) at every rename they make, one run per rename; after each, the next command
(`kdistill versions`) must leave production loadable, registry.json naming the model the production folder
holds (its stamp and its weights), and no temporary folder behind.

The kill is the injected hook of tasks.infra.storage (KDISTILL_KILL_AT_RENAME=N: the process kills itself as
it enters its Nth rename), which works on any machine; tests/e2e/test_crash_strace.py does the same with
strace's fault injection where strace is installed. Runs are forked from this process (no interpreter and
torch start-up per run), on the tiny workspace of tests/conftest.py (retrain_ws).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from tasks.cli import main
from tasks.infra import storage
from tasks.infra.registry_view import NEXT, OLD, STAMP, SWAP, find_version, production_dir, registry_path
from tasks.infra.storage import KILL_ENV, Paths, hash_dir
from tests.conftest import TINY_RETRAIN
from tests.retrain.test_label_hygiene import overrides

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]
FORK = multiprocessing.get_context("fork")  # the child inherits the loaded libraries: a run takes ~1 s, not ~10
MAX_RENAMES = 40  # a bound on the loop, far above any of these commands' renames


# Gates open; the cycle as small as it goes: one student (no production text to pseudo-label), little replay.
EXTRA = {"promote": {"tolerance": 1.0},
         "retrain": {**TINY_RETRAIN["retrain"], "max_unlabelled": 0, "pseudo_ablation": False, "replay_ratio": 0.5}}


def argv(root: Path, *command: str) -> list[str]:
    return ["--params", str(root / "params.yaml"), "--root", str(root), "-q", *overrides(EXTRA), *command]


def _child(args: list[str], kill_at: int | None, trace: str | None) -> None:
    storage._renames = 0
    if kill_at is not None:
        os.environ[KILL_ENV] = str(kill_at)
    if trace is not None:  # record every rename's target, in order (to find where a promotion's renames are)
        real, seen = storage.rename, []

        def traced(src, dst):
            seen.append(str(dst))
            real(src, dst)
        storage.rename = traced
    code = main(args)
    if trace is not None:
        Path(trace).write_text(json.dumps(seen))
    os._exit(code)


def run(args: list[str], kill_at: int | None = None, trace: str | None = None) -> int:
    """`kdistill args` in a forked child (killed at its `kill_at`th rename); its exit code, -9 when killed."""
    proc = FORK.Process(target=_child, args=(args, kill_at, trace))
    proc.start()
    proc.join(600)
    return proc.exitcode


def consistent(root: Path) -> int:
    """Run the next command and check the lifecycle's invariants; returns the production version."""
    from tasks.infra.config import load_config
    from tasks.production.score import load_production

    assert main(argv(root, "versions")) == 0
    registry = json.loads(registry_path(Paths(root)).read_text())
    folder = production_dir(Paths(root))
    stamp = json.loads((folder / STAMP).read_text())
    assert registry["production"] == stamp["version"]
    entry = find_version(registry, stamp["version"])
    assert hash_dir(folder, exclude=(STAMP,)) == entry["archive_hash"]  # the weights served are the entry's
    model = load_production(load_config(root / "params.yaml", overrides()[1::2]), Paths(root))
    assert model.version == stamp["version"]
    left = [p.relative_to(root).as_posix() for p in (root / "models").rglob("*")
            if ".tmp-" in p.name or p.name in (NEXT, OLD, SWAP)]
    assert left == []
    return stamp["version"]


def kill_everywhere(pristine: Path, work: Path, command: list[str], renames: list[int] | None = None) -> list[int]:
    """Run `command` on a fresh copy of `pristine`, killed at each rename in turn (all of them, or `renames`,
    then once unkilled: the caller did); checks the invariants after each. Returns the production version each
    run left."""
    outcomes, n = [], 0
    for n in renames or range(1, MAX_RENAMES + 1):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work, symlinks=True)
        code = run(argv(work, *command), kill_at=n)
        if code == 0 and renames is None:
            break  # fewer than n renames: it ran to the end
        assert code == -9, f"rename {n}: exit {code}"
        outcomes.append(consistent(work))
    assert renames is not None or n < MAX_RENAMES
    if renames is not None:
        return outcomes
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work, symlinks=True)
    assert run(argv(work, *command)) == 0
    outcomes.append(consistent(work))
    return outcomes


@pytest.fixture
def candidate_ws(retrain_ws) -> Path:
    """retrain_ws with a student that differs from production (version 1) and its evaluate report."""
    from tasks.core.student import build_student
    from tasks.models.loading import load_classifier
    from tasks.infra.storage import write_json

    paths = Paths(retrain_ws)
    teacher, _ = load_classifier(str(paths.teacher), ["negative", "positive"])
    shutil.rmtree(paths.student)
    build_student(teacher, [1, 3]).save_pretrained(paths.student)
    shutil.copy(paths.teacher / "tokenizer.json", paths.student / "tokenizer.json")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (paths.teacher / name).is_file():
            shutil.copy(paths.teacher / name, paths.student / name)
    student = {"accuracy": 0.6, "f1_macro": 0.6, "latency_ms_b1": 1.0, "size_mb": 1.0}
    write_json(paths.reports / "metrics.json", {"retention": 1.0, "student": student, "teacher": student,
                                                "test_rows": 40})
    return retrain_ws


def test_promote_killed_at_every_rename_leaves_a_consistent_lifecycle(candidate_ws, tmp_path):
    outcomes = kill_everywhere(candidate_ws, tmp_path / "work", ["promote"])
    # Each kill left either the old model (version 1, everywhere) or the new one (version 2, everywhere).
    assert set(outcomes) == {1, 2} and outcomes[-1] == 2, outcomes


def test_rollback_killed_at_every_rename_leaves_a_consistent_lifecycle(candidate_ws, tmp_path):
    assert run(argv(candidate_ws, "promote")) == 0 and consistent(candidate_ws) == 2
    outcomes = kill_everywhere(candidate_ws, tmp_path / "work", ["rollback", "1"])
    assert set(outcomes) == {1, 2} and outcomes[-1] == 1, outcomes


def test_a_retraining_cycles_promotion_killed_at_every_rename_leaves_a_consistent_lifecycle(retrain_ws, tmp_path):
    # The cycle's renames before its promotion (scratch folders, snapshots) are many and none is the
    # lifecycle's: a traced run finds the promotion's, from the archive of version 2 to the registry's write.
    trace = tmp_path / "renames.json"
    scratch = tmp_path / "traced"
    shutil.copytree(retrain_ws, scratch, symlinks=True)
    assert run(argv(scratch, "retrain"), trace=str(trace)) == 0
    targets = json.loads(trace.read_text())
    first = next(i for i, t in enumerate(targets, 1) if Path(t).parent.name == "versions" and Path(t).name == "v2")
    last = max(i for i, t in enumerate(targets, 1) if Path(t).name == "registry.json")
    assert consistent(scratch) == 2  # the unkilled run promoted version 2
    outcomes = kill_everywhere(retrain_ws, tmp_path / "work", ["retrain"], list(range(first, last + 1)))
    assert set(outcomes) == {1, 2}, outcomes


def test_a_killed_distills_temporary_model_copies_are_removed_by_the_next_run(retrain_ws, tmp_path):
    """Issue 25 item 4: a distill killed while saving its model left a full model copy (.distilled.tmp-*) for ever."""
    shutil.copytree(retrain_ws / "models" / "student", retrain_ws / "models" / "distilled")  # an earlier run's
    command = [*argv(retrain_ws, "distill")[:-1], "-S", "distill.epochs=1", "-S", "distill.unlabeled_max_rows=0",
               "distill"]
    traced, trace = tmp_path / "traced", tmp_path / "renames.json"
    shutil.copytree(retrain_ws, traced, symlinks=True)
    assert run([a.replace(str(retrain_ws), str(traced)) for a in command], trace=str(trace)) == 0
    models = str(traced / "models")
    n = next(i for i, t in enumerate(json.loads(trace.read_text()), 1) if t.startswith(f"{models}/.distilled.tmp-"))
    assert run(command, kill_at=n + 1) == -9  # killed with the old model moved aside and the new one not yet in
    stale = lambda: sorted(p.name for p in (retrain_ws / "models").glob(".distilled.tmp-*"))  # noqa: E731
    assert len(stale()) == 2
    assert run(command) == 0
    assert stale() == [] and (retrain_ws / "models" / "distilled" / "config.json").is_file()
