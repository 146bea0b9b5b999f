"""A retraining cycle keeps the champion's student kind (issue 23): a static student retrains as a static
student (warm start: its table and head, on new + replayed rows with the updated teacher's soft labels), a
pruned one is put back on the teacher's vocabulary to train and pruned again; rollback restores either."""

from __future__ import annotations

import json

import pytest

from tasks.models.loading import load_classifier, load_tokenizer
from tasks.infra.storage import Paths, hash_dir
from tasks.lifecycle.registry import production_dir, read_registry, rollback
from tasks.lifecycle.retrain import retrain
from tasks.models.static import is_static
from tasks.models.vocab import is_pruned

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("retrain_ws", ["static", "pruned"], indirect=True)
def test_a_cycle_retrains_the_champions_kind_and_rollback_restores_it(retrain_ws, retrain_cfg):
    paths = Paths(retrain_ws)
    v1 = hash_dir(production_dir(paths), "*.safetensors")
    kind = "static" if is_static(json.loads((production_dir(paths) / "config.json").read_text())) else "pruned"
    report = retrain(retrain_cfg, paths)
    assert report["promoted"], report["reason"]  # the tiny workspace's gates are open
    challenger, _ = load_classifier(str(production_dir(paths)), ["negative", "positive"])
    tokenizer = load_tokenizer(str(production_dir(paths)))
    assert hash_dir(production_dir(paths), "*.safetensors") != v1
    if kind == "static":
        assert is_static(challenger) and challenger.config.hidden_size == 16
        assert report["students"]["with_pseudo"]["layer_map"] == []
    else:
        assert is_pruned(challenger) and len(tokenizer) == challenger.config.vocab_size
        # pruned again on the cycle's own transfer set: its tokens are all kept
        new_train = retrain_ws / "data" / "cycles" / "v2" / "new_train.parquet"
        import pandas as pd

        words = pd.read_parquet(new_train)["text"].tolist()
        assert all("[UNK]" not in tokenizer.tokenize(t) or "[UNK]" in load_tokenizer(
            str(paths.teacher)).tokenize(t) for t in words)
    rollback(retrain_cfg, paths, 1)
    assert read_registry(paths)["production"] == 1 and hash_dir(production_dir(paths), "*.safetensors") == v1
