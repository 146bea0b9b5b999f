"""`kdistill predict` on hostile input: one line and exit 2, never a traceback."""

from __future__ import annotations

import shutil
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
