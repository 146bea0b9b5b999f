"""`kdistill predict` on hostile input: one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.cli import main

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def predict(root: Path, *args: str) -> int:
    return main(["--params", str(REPO / "params.yaml"), "--root", str(root), "-q", *args])


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_pickle_weights_are_refused_in_one_line(tmp_path, tiny_teacher_dir, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = Path(shutil.copytree(tiny_teacher_dir, tmp_path / "pickled"))
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model, folder / "pytorch_model.bin")  # a whole pickled module: more than tensors
    capsys.readouterr()  # the loading bar above
    assert predict(tmp_path, "predict", "a film", "--model", str(folder), "--variant", "torch-fp32") == 2
    assert one_line(capsys) == (f"error: --model={str(folder)!r}: its pickle weights (*.bin) hold more than tensors, "
                                "and loading them could run code; refused (save the model as safetensors)")


def test_max_length_beyond_the_model_positions_is_named(tmp_path, tiny_teacher_dir, capsys):
    long_text = " ".join(["film"] * 300)  # 300 tokens: beyond the tiny model's 128 positions
    code = predict(tmp_path, "-S", "base.max_length=100000", "predict", long_text, "--model", str(tiny_teacher_dir),
                   "--variant", "torch-fp32")
    assert code == 2
    assert one_line(capsys) == (f"error: base.max_length=100000: above the position limit of "
                                f"--model={str(tiny_teacher_dir)!r} (128 tokens, max_position_embeddings in its "
                                "config.json); expected at most that")


@pytest.mark.parametrize("texts, where", [
    ([""], "text 1"),
    (["a fine film", " \u200b "], "text 2"),
])
def test_empty_texts_are_rejected_as_the_api_does(tmp_path, tiny_teacher_dir, capsys, texts, where):
    code = predict(tmp_path, "predict", *texts, "--model", str(tiny_teacher_dir), "--variant", "torch-fp32")
    assert code == 2
    assert one_line(capsys) == (f"error: predict: {where} is empty or blank (whitespace or invisible characters "
                                "only); expected some words")


def test_an_empty_text_in_a_file_is_named_by_its_row(tmp_path, tiny_teacher_dir, capsys):
    path = tmp_path / "new.csv"
    path.write_text('text\na fine film\n"   "\n')
    code = predict(tmp_path, "predict", "--file", str(path), "--model", str(tiny_teacher_dir),
                   "--variant", "torch-fp32")
    assert code == 2
    assert one_line(capsys) == (f"error: predict: {path}: row 2 is empty or blank (whitespace or invisible "
                                "characters only); expected some words")


def run_cli(env: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI in a fresh process (the hub's settings are read when huggingface_hub is imported)."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "--params", str(REPO / "params.yaml"), "-q", *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    return out, time.monotonic() - start


def test_an_unreachable_hub_fails_in_seconds(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf")}
    out, took = run_cli(env, "--root", str(tmp_path), "predict", "a film", "--model", "someorg/some-model")
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [(
        f"error: --model='someorg/some-model': a Hugging Face hub id that is not in the local cache, and the hub "
        f"http://127.0.0.1:{port} is unreachable (Connection refused); give a local model folder, or download it "
        "where the hub is reachable")]
    assert took < 30  # about 50 s of retries before (imports take a few seconds of this)


def test_hub_offline_fails_at_once_and_a_cached_model_still_serves(tmp_path, tiny_teacher_dir, capsys):
    assert predict(tmp_path, "predict", "a film", "--model", "someorg/some-model") == 2  # HF_HUB_OFFLINE=1 here
    assert "not in the local cache, and HF_HUB_OFFLINE is set" in one_line(capsys)
    # The same id, once in the local cache (as a download leaves it), is served offline.
    repo = tmp_path / "hf" / "hub" / "models--someorg--some-model"
    shutil.copytree(tiny_teacher_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out, _ = run_cli(env, "--root", str(tmp_path), "predict", "a film", "--model", "someorg/some-model",
                     "--variant", "torch-fp32")
    assert out.returncode == 0, out.stderr
    assert '"label": ' in out.stdout


def broken_copy(tmp_path: Path, model_dir: Path, name: str, file: str, content: bytes) -> Path:
    folder = Path(shutil.copytree(model_dir, tmp_path / name))
    (folder / file).write_bytes(content)
    return folder


@pytest.mark.parametrize("file, content, words", [
    ("config.json", b'{"model_type": ', "config.json is not valid JSON (Expecting value"),
    ("config.json", b"\xff\xfe{}", "config.json is not valid JSON ('utf-8' codec can't decode byte 0xff"),
    ("config.json", b"[1, 2]", "config.json holds a JSON list; expected a JSON object"),
    ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "cannot load model (Error while deserializing"),
])
def test_a_broken_model_folder_is_named_in_one_line(tmp_path, tiny_teacher_dir, capsys, file, content, words):
    # A hand-edited or half-copied model folder: JSONDecodeError, AttributeError or SafetensorError tracebacks.
    folder = broken_copy(tmp_path, tiny_teacher_dir, "broken", file, content)
    capsys.readouterr()
    assert predict(tmp_path, "predict", "a film", "--model", str(folder), "--variant", "torch-fp32") == 2
    line = one_line(capsys)
    assert line.startswith(f"error: --model={str(folder)!r}: ") and words in line, line


def test_a_config_json_with_a_string_position_limit_is_named(tmp_path, tiny_teacher_dir, capsys):
    config = json.loads((tiny_teacher_dir / "config.json").read_text()) | {"max_position_embeddings": "128"}
    folder = broken_copy(tmp_path, tiny_teacher_dir, "edited", "config.json", json.dumps(config).encode())
    assert predict(tmp_path, "predict", "a film", "--model", str(folder), "--variant", "torch-fp32") == 2
    assert one_line(capsys) == (f"error: --model={str(folder)!r}: max_position_embeddings (and pad_token_id) in its "
                                "config.json must be integers, got '128'")


@pytest.mark.parametrize("variant", ["torch-fp32", "onnx-fp32"])
def test_a_head_that_does_not_match_the_labels_is_refused_not_served_at_random(tmp_path, tiny_teacher_dir, capsys,
                                                                               variant):
    # config.json names 3 labels, the weights hold a 2-class head: from_pretrained drew a new head at
    # random, and predict answered with it (exit 0).
    config = json.loads((tiny_teacher_dir / "config.json").read_text())
    config |= {"id2label": {"0": "a", "1": "b", "2": "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
    folder = broken_copy(tmp_path, tiny_teacher_dir, "three", "config.json", json.dumps(config).encode())
    capsys.readouterr()
    assert predict(tmp_path, "predict", "a film", "--model", str(folder), "--variant", variant) == 2
    assert one_line(capsys) == (f"error: --model={folder}: its weights hold no trained classifier head for the 3 "
                                "labels of its config.json (missing, or of another size), so it would answer at "
                                "random; expected a fine-tuned classifier folder")


def test_a_model_folder_without_its_tokenizer_is_refused(tmp_path, tiny_teacher_dir, capsys):
    # transformers built a tokenizer of special tokens only: every word [UNK], every text the same answer, exit 0.
    folder = Path(shutil.copytree(tiny_teacher_dir, tmp_path / "no_tokenizer"))
    for file in folder.iterdir():
        if file.name.startswith(("tokenizer", "vocab", "special_tokens")):
            file.unlink()
    assert predict(tmp_path, "predict", "a film", "--model", str(folder), "--variant", "torch-fp32") == 2
    assert one_line(capsys) == (f"error: --model={str(folder)!r}: no tokenizer files in it (tokenizer.json, vocab.txt, "
                                "...), so every word would be unknown; expected the tokenizer saved beside the model")


def test_a_text_with_no_tokens_is_rejected_as_the_api_does(tmp_path, tiny_teacher_dir, capsys):
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"text": "a fine film"}) + "\n" + json.dumps({"text": "\u200f\u0301"}) + "\n")
    code = predict(tmp_path, "predict", "--file", str(path), "--model", str(tiny_teacher_dir), "--variant", "torch-fp32")
    assert code == 2
    assert one_line(capsys) == (f"error: predict: {path}: row 2 has no tokens once tokenised (marks or control "
                                "characters only); expected some words")
