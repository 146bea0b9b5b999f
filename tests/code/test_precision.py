"""base.precision: one resolution (auto | fp32 | bf16) used by training, the teacher-output cache and
batch prediction; a bf16 cache entry never serves an fp32 run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.core import precision
from tasks.core.data import make_dataset
from tasks.core.loop import LoopConfig, train
from tasks.core.precision import resolve_precision
from tasks.core.predict import predict_logits
from tasks.distill import teacher_outputs
from tasks.models.training import supervised_step
from tasks.infra.config import Config, load_config
from tasks.infra.errors import ConfigError
from tasks.infra.storage import Paths
from tests.conftest import CORPUS, make_tiny_bert, save_model_dir

CPU = torch.device("cpu")
REAL_CPU_HAS_BF16 = precision.cpu_has_bf16  # taken before tests/conftest.py's autouse fixture patches it
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def hardware_bf16(monkeypatch):
    """This CPU reports bf16 arithmetic (AVX512-BF16 / AMX), whatever the test machine has."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


def test_auto_is_fp32_on_a_cpu_without_hardware_bf16():
    # The autouse fixture in tests/conftest.py reports no hardware bf16.
    assert resolve_precision("auto", CPU) is None
    assert resolve_precision("auto", "cpu", rows=64) is None


def test_auto_is_bf16_where_the_cpu_reports_it_except_for_a_single_row(hardware_bf16):
    assert resolve_precision("auto", CPU) == torch.bfloat16
    assert resolve_precision("auto", CPU, rows=32) == torch.bfloat16
    assert resolve_precision("auto", CPU, rows=1) is None  # batch 1 does not pay


def test_auto_on_cuda_follows_the_gpus_bf16_support(monkeypatch):
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: True)
    assert resolve_precision("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda: False)
    assert resolve_precision("auto", "cuda") is None


def test_explicit_settings_win_over_the_hardware(hardware_bf16):
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU, rows=1) == torch.bfloat16


def test_the_capability_check_reads_torchs_cpu_features():
    caps = torch.cpu.get_capabilities()
    expected = any(caps.get(k) for k in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))
    assert REAL_CPU_HAS_BF16() is expected


def test_a_bad_value_is_one_line_naming_base_precision(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  precision: fp16\n")
    with pytest.raises(ConfigError) as err:
        load_config(params)
    message = str(err.value)
    assert "base.precision" in message and "fp16" in message and "\n" not in message
    assert load_config(params, {"base": {"precision": "bf16"}}).base.precision == "bf16"
    with pytest.raises(ValueError, match="base.precision"):
        resolve_precision("half", CPU)


@pytest.fixture
def teacher_stage(tmp_path, tiny_tokenizer):
    cfg, paths = Config(), Paths(tmp_path)
    cfg.distill.eval_batch_size = 4
    teacher = make_tiny_bert(len(tiny_tokenizer), layers=2)
    with torch.no_grad():  # larger weights: bf16 rounding shows in the logits
        for p in teacher.parameters():
            if p.ndim == 2:
                p.mul_(10.0)
    save_model_dir(teacher, tiny_tokenizer, paths.teacher)
    data = make_dataset(tiny_tokenizer, CORPUS, [i % 2 for i in range(len(CORPUS))], max_length=32)
    return cfg, paths, teacher.eval(), data


def _outputs(stage, setting: str):
    cfg, paths, teacher, data = stage
    return teacher_outputs(cfg.distill, paths.teacher, paths.cache, teacher, data, 0, [0, 1], CPU, precision=setting)


def test_a_bf16_cache_entry_never_serves_an_fp32_run(teacher_stage, monkeypatch):
    bf16_out, state, bf16_key = _outputs(teacher_stage, "bf16")
    assert state == "miss"
    fp32_out, state, fp32_key = _outputs(teacher_stage, "fp32")
    assert state == "miss" and fp32_key != bf16_key  # a different entry, built again
    assert np.abs(np.asarray(bf16_out.logits) - np.asarray(fp32_out.logits)).max() > 0  # bf16 was really used
    # auto resolves to fp32 here: it finds the fp32 entry, not the bf16 one ...
    assert _outputs(teacher_stage, "auto")[1:] == ("hit", fp32_key)
    # ... and with hardware bf16 it finds the bf16 one: the key names the resolved precision.
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert _outputs(teacher_stage, "auto")[1:] == ("hit", bf16_key)
    # The entry records its precision too.
    assert '"precision": "bf16"' in (teacher_stage[1].cache / bf16_key / "meta.json").read_text()


def test_an_explicit_bf16_run_trains_and_predicts(tmp_path, tiny_tokenizer):
    texts = CORPUS * 3
    data = make_dataset(tiny_tokenizer, texts, [int(i % 10 < 5) for i in range(len(texts))], max_length=16)
    model = make_tiny_bert(len(tiny_tokenizer), layers=2)
    seen: list[torch.dtype | None] = []

    def step(m, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return supervised_step(m, batch)

    cfg = LoopConfig(epochs=2, batch_size=8, lr=1e-3, device="cpu", precision="bf16", patience=5)
    result = train(model, data, data, step, cfg, tiny_tokenizer.pad_token_id, tmp_path / "ckpt")
    assert seen and set(seen) == {torch.bfloat16}
    assert len(result.history) == 2 and all(np.isfinite(r["train_loss"]) for r in result.history)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay fp32
    bf16 = predict_logits(model, data, tiny_tokenizer.pad_token_id, 8, CPU, precision="bf16")
    fp32 = predict_logits(model, data, tiny_tokenizer.pad_token_id, 8, CPU, precision="fp32")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape == (len(texts), 2)
    assert np.abs(bf16 - fp32).max() > 0  # computed in bf16 ...
    assert np.abs(bf16 - fp32).max() < 0.1  # ... and close to fp32


def test_auto_prediction_keeps_a_single_row_in_fp32(tiny_tokenizer, hardware_bf16):
    model = make_tiny_bert(len(tiny_tokenizer), layers=2).eval()
    one = make_dataset(tiny_tokenizer, CORPUS[:1], None, max_length=16)
    pad = tiny_tokenizer.pad_token_id
    np.testing.assert_array_equal(predict_logits(model, one, pad, 8, CPU, precision="auto"),
                                  predict_logits(model, one, pad, 8, CPU, precision="fp32"))
    many = make_dataset(tiny_tokenizer, CORPUS, None, max_length=16)
    np.testing.assert_array_equal(predict_logits(model, many, pad, 8, CPU, precision="auto"),
                                  predict_logits(model, many, pad, 8, CPU, precision="bf16"))


def test_loop_config_takes_base_precision():
    from tasks.models.training import loop_config

    cfg = Config()
    cfg.base.precision = "bf16"
    assert loop_config(cfg.distill, cfg.base, "distill").precision == "bf16"
    assert LoopConfig().precision == Config().base.precision == "auto"
