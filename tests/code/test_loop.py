"""Code tests of the training loop on a tiny model and a tiny separable dataset: it learns,
a crashed run resumes to the same weights as an uninterrupted one, and early stopping stops."""

from __future__ import annotations

import random

import pytest
import torch

from tests.conftest import make_tiny_bert
from tasks.models.training import supervised_step
from tasks.core import loop
from tasks.core.data import TokenDataset, make_dataset
from tasks.core.loop import LoopConfig, TrainResult, train, validation_metrics

POSITIVE = ["great", "wonderful", "brilliant", "loved", "best", "charming", "funny", "warm"]
NEGATIVE = ["awful", "boring", "dull", "slow", "waste", "terrible", "bad", "forgettable"]
FILLER = ["the", "film", "movie", "plot", "a", "and", "of", "it", "story", "cast"]


def separable_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Rows of 2-4 words of one sentiment group among 0-4 neutral words; the label is the group."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.choices(POSITIVE if label else NEGATIVE, k=rng.randint(2, 4))
        words += rng.choices(FILLER, k=rng.randint(0, 4))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits(tiny_tokenizer) -> tuple[TokenDataset, TokenDataset]:
    train_texts, train_labels = separable_texts(96, seed=0)
    val_texts, val_labels = separable_texts(48, seed=1)
    return (make_dataset(tiny_tokenizer, train_texts, train_labels, 32),
            make_dataset(tiny_tokenizer, val_texts, val_labels, 32))


def tiny_model(vocab_size: int, dropout: bool = True) -> torch.nn.Module:
    model = make_tiny_bert(vocab_size, layers=2, seed=0)
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        ids = torch.arange(5, 15)[None]
        with torch.no_grad():  # train mode, yet deterministic: no dropout is left anywhere
            assert torch.equal(model.train()(input_ids=ids).logits, model(input_ids=ids).logits)
    return model


def loop_config(**overrides) -> LoopConfig:
    base = dict(epochs=2, batch_size=8, eval_batch_size=16, lr=2e-3, warmup_ratio=0.1, patience=10, device="cpu",
                seed=3)
    return LoopConfig(**{**base, **overrides})


class Crash(RuntimeError):
    """The simulated crash."""


def counting(step, crash_after: int | None = None):
    """The step function, counting its calls; it raises on call `crash_after + 1`."""
    def wrapped(model, batch):
        wrapped.calls += 1
        if crash_after is not None and wrapped.calls > crash_after:
            raise Crash(f"simulated crash at call {wrapped.calls}")
        return step(model, batch)

    wrapped.calls = 0
    return wrapped


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key


def test_train_learns_a_separable_task(splits, tiny_tokenizer, tmp_path):
    train_data, val_data = splits
    model = tiny_model(len(tiny_tokenizer))
    result = train(model, train_data, val_data, supervised_step, loop_config(epochs=5, lr=5e-3),
                   tiny_tokenizer.pad_token_id, tmp_path / "ckpt")
    assert isinstance(result, TrainResult) and len(result.history) == 5 and not result.stopped_early
    assert result.steps == 5 * 12  # 96 rows, batches of 8
    accuracies = [h["val_accuracy"] for h in result.history]
    assert max(accuracies) >= 0.9, accuracies  # chance is 0.5
    assert result.best_accuracy == max(accuracies)
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert {"epoch", "train_loss", "train_ce", "val_accuracy", "val_loss", "seconds", "samples_per_s"} \
        <= set(result.history[0])
    # The model is left holding the best epoch's weights.
    final = validation_metrics(model, val_data, tiny_tokenizer.pad_token_id, 16, torch.device("cpu"))
    assert final["val_accuracy"] == pytest.approx(result.best_accuracy)


@pytest.fixture
def epoch_end_weights(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The model's weights at the end of every epoch, as `validation_metrics` sees them.

    `train` leaves the best epoch's weights in the model and removes the checkpoints of a
    finished run, so this spy is how a test sees the last epoch's weights.
    """
    seen: list[dict[str, torch.Tensor]] = []

    def spy(model, *args, **kwargs):
        seen.append(weights(model))
        return validation_metrics(model, *args, **kwargs)

    monkeypatch.setattr(loop, "validation_metrics", spy)
    return seen


def run_crash_and_resume(splits, pad_id: int, vocab_size: int, tmp_path, epoch_end_weights, dropout: bool) -> dict:
    """Run A uninterrupted; run B crashes mid-epoch 2 and resumes on a fresh model instance."""
    train_data, val_data = splits
    model_a = tiny_model(vocab_size, dropout)
    result_a = train(model_a, train_data, val_data, supervised_step, loop_config(), pad_id, tmp_path / "a")
    last_a = epoch_end_weights[-1]
    cfg_b = loop_config(save_every_steps=5)  # checkpoints at steps 5, 10, 12 (epoch end), 15, 20
    crashing = counting(supervised_step, crash_after=18)  # 6 steps into epoch 2
    with pytest.raises(Crash):
        train(tiny_model(vocab_size, dropout), train_data, val_data, crashing, cfg_b, pad_id, tmp_path / "b")
    saved = torch.load(tmp_path / "b" / "state.pt", weights_only=False)["loop"]
    model_b = tiny_model(vocab_size, dropout)
    resumed = counting(supervised_step)
    result_b = train(model_b, train_data, val_data, resumed, cfg_b, pad_id, tmp_path / "b", resume=True)
    return dict(model_a=model_a, result_a=result_a, last_a=last_a, model_b=model_b, result_b=result_b,
                last_b=epoch_end_weights[-1], saved=saved, resumed_calls=resumed.calls,
                epoch_ends=len(epoch_end_weights))


def check_resume(run: dict) -> None:
    steps_per_epoch = 12
    saved, result_a, result_b = run["saved"], run["result_a"], run["result_b"]
    # The crashed run left its last periodic checkpoint: 3 steps into epoch 2.
    assert (saved["global_step"], saved["epoch"], saved["step_in_epoch"]) == (15, 1, 3)
    assert run["epoch_ends"] == 2 + 1 + 1  # A: 2 epochs; B: epoch 1 before the crash, epoch 2 after it
    assert run["resumed_calls"] == 2 * steps_per_epoch - 15  # continued from the checkpoint, not from scratch
    assert result_a.steps == result_b.steps == 2 * steps_per_epoch
    # Training moved the weights, so equal weights are not merely equal initial weights.
    init = weights(tiny_model(run["model_a"].config.vocab_size))
    assert max((run["last_a"][k] - init[k]).abs().max().item() for k in init) > 1e-2
    assert_same_weights(run["last_a"], run["last_b"])  # the last epoch's weights
    assert_same_weights(weights(run["model_a"]), weights(run["model_b"]))  # the best epoch's, left in the model
    for rec_a, rec_b in zip(result_a.history, result_b.history, strict=True):
        assert rec_a["epoch"] == rec_b["epoch"]
        assert rec_a["val_accuracy"] == rec_b["val_accuracy"]
        assert rec_a["val_loss"] == pytest.approx(rec_b["val_loss"], abs=1e-6)
    # Epoch 1 finished before the crash, so its whole record came back from the checkpoint.
    assert result_a.history[0]["train_loss"] == pytest.approx(result_b.history[0]["train_loss"], abs=1e-6)
    assert result_a.best_accuracy == result_b.best_accuracy


def test_resume_after_crash_matches_uninterrupted_run(splits, tiny_tokenizer, tmp_path, epoch_end_weights):
    """Without dropout, what the loop itself must carry over (weights, optimiser, schedule, batch
    order, step counters) decides the outcome: it must match exactly."""
    check_resume(run_crash_and_resume(splits, tiny_tokenizer.pad_token_id, len(tiny_tokenizer), tmp_path,
                                      epoch_end_weights, dropout=False))
    # The comparison is sensitive: the same run with another batch order ends elsewhere.
    last_a = epoch_end_weights[1]
    train(tiny_model(len(tiny_tokenizer)), *splits, supervised_step, loop_config(seed=4), tiny_tokenizer.pad_token_id,
          tmp_path / "c")
    with pytest.raises(AssertionError):
        assert_same_weights(last_a, epoch_end_weights[-1])


def test_resume_after_crash_matches_uninterrupted_run_with_dropout(splits, tiny_tokenizer, tmp_path,
                                                                   epoch_end_weights):
    check_resume(run_crash_and_resume(splits, tiny_tokenizer.pad_token_id, len(tiny_tokenizer), tmp_path,
                                      epoch_end_weights, dropout=True))


def test_finished_run_removes_its_checkpoints_and_resume_then_starts_over(splits, tiny_tokenizer, tmp_path,
                                                                         epoch_end_weights):
    train_data, val_data = splits
    cfg = loop_config(epochs=1, save_every_steps=5)
    first = train(tiny_model(len(tiny_tokenizer)), train_data, val_data, supervised_step, cfg,
                  tiny_tokenizer.pad_token_id, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "state.pt").exists() and not (tmp_path / "ckpt" / "best.pt").exists()
    step = counting(supervised_step)
    again = train(tiny_model(len(tiny_tokenizer)), train_data, val_data, step, cfg, tiny_tokenizer.pad_token_id,
                  tmp_path / "ckpt", resume=True)
    assert step.calls == again.steps == first.steps == 12
    assert_same_weights(epoch_end_weights[0], epoch_end_weights[1])  # same seed, same run


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_when_val_accuracy_cannot_improve(splits, tiny_tokenizer, tmp_path, patience):
    train_data, val_data = splits
    step = counting(supervised_step)
    # lr 0: the weights never change, so validation accuracy repeats and never improves.
    result = train(tiny_model(len(tiny_tokenizer)), train_data, val_data, step,
                   loop_config(epochs=6, lr=0.0, patience=patience), tiny_tokenizer.pad_token_id, tmp_path)
    assert result.stopped_early
    assert len(result.history) == patience + 1
    assert result.steps == step.calls == 12 * (patience + 1)
    assert len({h["val_accuracy"] for h in result.history}) == 1


def test_no_early_stop_while_improving(splits, tiny_tokenizer, tmp_path):
    train_data, val_data = splits
    result = train(tiny_model(len(tiny_tokenizer)), train_data, val_data, supervised_step,
                   loop_config(epochs=3, patience=1), tiny_tokenizer.pad_token_id, tmp_path)
    accuracies = [h["val_accuracy"] for h in result.history]
    # Stopping is right only after an epoch that did not beat the best so far.
    for i, acc in enumerate(accuracies[1:], start=1):
        if acc <= max(accuracies[:i]):
            assert result.stopped_early and len(accuracies) == i + 1
            break
    else:
        assert not result.stopped_early and len(accuracies) == 3


def schedule_factors(total: int, warmup_ratio: float) -> list[float]:
    """The learning-rate factor of each of `total` optimiser steps (the base lr is 1)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = loop.make_schedule(optimizer, total, warmup_ratio)
    factors = []
    for _ in range(total):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return factors


def test_schedule_warms_up_linearly_then_decays_to_zero():
    # 10 steps, 20% warm-up: 2 steps rising from 0, then down by 1/8 a step (transformers' schedule).
    assert schedule_factors(10, 0.2) == pytest.approx([0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert schedule_factors(4, 0.0) == pytest.approx([1, 0.75, 0.5, 0.25])  # no warm-up
