"""Labels with stray spaces (issue 25 item 6): ingest strips them, and so must everything after it. `score`
logged 'positive ' raw (drift's quality check then read every row as wrong: accuracy 0, a drift verdict),
and a retrain batch with them died in a traceback, unquarantined, on every later cycle."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.cli import main
from tasks.infra.storage import Paths
from tests.conftest import TINY_RETRAIN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def overrides(extra: dict | None = None) -> list[str]:
    """TINY_RETRAIN (and `extra`) as the command line's -S key=value pairs."""
    pairs = []
    for section, values in {**TINY_RETRAIN, **(extra or {})}.items():
        for key, value in values.items():
            pairs += ["-S", f"{section}.{key}={json.dumps(value)}"]
    return pairs


def spaced(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=[f"{v} " if i % 2 else f"  {v}" for i, v in enumerate(frame["label"])])


def test_score_logs_labels_as_ingest_reads_them(retrain_ws):
    from tasks.infra.prodlog import read_log
    from tests.conftest import embedded_sample

    incoming = retrain_ws / "data" / "incoming"
    spaced(embedded_sample("movies", 30, 5)).to_csv(incoming / "batch.csv", index=False)
    argv = ["--params", str(retrain_ws / "params.yaml"), "--root", str(retrain_ws), "-q", *overrides(), "score"]
    assert main(argv) == 0
    logged = read_log(Paths(retrain_ws))
    labels = set(logged.loc[logged["source"] == "batch.csv", "label"])
    assert labels == {"negative", "positive"}, labels


def test_a_retrain_batch_with_spaced_labels_is_learned_not_a_traceback(retrain_ws, capsys):
    from tests.conftest import embedded_sample

    labelled = retrain_ws / "data" / "incoming" / "labelled"
    (labelled / "tweets-1.csv").unlink()
    spaced(embedded_sample("tweets", 40, 7)).to_csv(labelled / "spaced.csv", index=False)
    # min_new_labelled above the batch: the cycle gathers and validates it, then waits (no training needed here)
    argv = ["--params", str(retrain_ws / "params.yaml"), "--root", str(retrain_ws), "-q",
            *overrides({"retrain": {**TINY_RETRAIN["retrain"], "min_new_labelled": 1000}}), "retrain"]
    assert main(argv) == 0
    report = json.loads((retrain_ws / "reports" / "retrain.json").read_text())
    assert report["status"] == "waiting for labels"
    assert [(b["file"], b["status"], b.get("rows")) for b in report["batches"]] == [("spaced.csv", "used", 40)]
    assert "40 new labelled rows" in report["reason"]
