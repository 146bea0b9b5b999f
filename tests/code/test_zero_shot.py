"""The zero-shot cold start (issue 12, part 2): a teacher from label descriptions, an unlabelled train split.

Tiny models only: a 4-layer random BERT and a tokenizer trained in the test (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tasks.cli import main, run_stage
from tasks.core.data import IGNORE_LABEL
from tasks.core.predict import predict_logits
from tasks.core.student import build_student
from tasks.infra.config import load_config
from tasks.infra.errors import ConfigError, DataError
from tasks.models.loading import load_classifier
from tasks.infra.storage import Paths
from tasks.quality.suites import UNLABELLED
from tasks.models.zero_shot import SCALE, centre, check_descriptions, is_zero_shot, zero_shot_classifier
from tests.conftest import CORPUS, TINY_PARAMS, make_tiny_bert

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
LABELS = ["negative", "positive"]
# Descriptions that are texts of the tiny corpus: a text identical to a description has cosine 1 with it.
DESCRIPTIONS = {"negative": "an awful boring movie", "positive": "a great film with a wonderful cast"}


def _encode(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.fixture(scope="module")
def zs_model(tiny_tokenizer):
    base = make_tiny_bert(len(tiny_tokenizer)).base_model
    return zero_shot_classifier(base, tiny_tokenizer, LABELS, DESCRIPTIONS, max_length=32)


def test_unlabelled_marker_is_the_label_the_loss_skips():
    assert UNLABELLED == IGNORE_LABEL


def test_zero_shot_teacher_classifies_a_description_as_its_label(zs_model, tiny_tokenizer):
    # Listed positive first: the answer must follow the text, not the row order.
    texts = [DESCRIPTIONS["positive"], DESCRIPTIONS["negative"]]
    with torch.no_grad():
        logits = zs_model(**_encode(tiny_tokenizer, texts)).logits
    assert logits.argmax(-1).tolist() == [1, 0]
    # A text's cosine with its own description is 1: its logit is the scale; every logit lies in [-scale, scale].
    assert logits[0, 1].item() == pytest.approx(SCALE, abs=1e-3)
    assert logits[1, 0].item() == pytest.approx(SCALE, abs=1e-3)
    assert logits.abs().max().item() <= SCALE + 1e-3


def test_saved_zero_shot_teacher_loads_as_a_trained_classifier_and_seeds_a_student(zs_model, tiny_tokenizer, tmp_path):
    zs_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, head_ready = load_classifier(str(tmp_path), LABELS)
    assert is_zero_shot(loaded) and head_ready  # distill and evaluate take it as a trained teacher
    batch = _encode(tiny_tokenizer, CORPUS[:4])
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(**batch).logits, zs_model(**batch).logits, atol=1e-5)
        out = loaded(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == 5  # embeddings + 4 layers: the distiller aligns the student with them
    student = build_student(loaded, [0, 3])
    assert student.config.num_hidden_layers == 2 and len(student.encoder.encoder.layer) == 2
    assert student.eval()(**batch).logits.shape == (4, 2)


def test_centring_leaves_no_label_preferred_on_average(tiny_tokenizer):
    from tasks.core.data import make_dataset

    base = make_tiny_bert(len(tiny_tokenizer), seed=1).base_model
    model = zero_shot_classifier(base, tiny_tokenizer, LABELS, DESCRIPTIONS, max_length=32)
    texts = make_dataset(tiny_tokenizer, CORPUS, None, 32)
    before = predict_logits(model, texts, tiny_tokenizer.pad_token_id, 4)
    bias = centre(model, texts, tiny_tokenizer.pad_token_id, 4)
    after = predict_logits(model, texts, tiny_tokenizer.pad_token_id, 4)
    assert abs(before.mean(0)).min() > 1.0  # a random embedder's texts all lie near both descriptions
    assert after.mean(0) == pytest.approx([0.0, 0.0], abs=1e-4)
    assert bias == pytest.approx(-before.mean(0), abs=1e-4) and model.config.centred_on == len(CORPUS)
    assert after == pytest.approx(before + bias, abs=1e-4)  # a shift per label, the same for every text


def test_supervised_step_skips_rows_without_a_label(tiny_tokenizer):
    """The teacher's and fine-tuning's step: a retraining cycle replays a zero-shot run's unlabelled train rows."""
    import torch.nn.functional as F

    from tasks.models.training import supervised_step

    model = make_tiny_bert(len(tiny_tokenizer)).eval()
    batch = _encode(tiny_tokenizer, CORPUS[:4])
    none = {**batch, "labels": torch.full((4,), IGNORE_LABEL)}
    loss, _ = supervised_step(model, none)
    assert torch.isfinite(loss) and loss.item() == 0.0  # F.cross_entropy alone: NaN
    loss.backward()
    some = {**batch, "labels": torch.tensor([1, IGNORE_LABEL, 0, IGNORE_LABEL])}
    logits = model(**batch).logits
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([1, 0]))
    assert supervised_step(model, some)[0].item() == pytest.approx(expected.item(), abs=1e-5)


def test_a_student_of_a_zero_shot_teacher_exports_to_onnx(zs_model, tiny_tokenizer, tmp_path):
    """The production model of a zero-shot run is such a student: the ONNX serving variants must take it."""
    from tasks.production.export import export_onnx

    student = build_student(zs_model, [0, 2])
    student.save_pretrained(tmp_path / "student")
    tiny_tokenizer.save_pretrained(tmp_path / "student")
    assert export_onnx(tmp_path / "student", tmp_path / "model.onnx") < 1e-3  # logits match PyTorch's


@pytest.mark.parametrize(("descriptions", "message"), [
    ({"negative": "bad"}, "teacher.zero_shot: label 'positive' has no description"),
    ({**DESCRIPTIONS, "neutral": "meh"}, "teacher.zero_shot.neutral: not a label of the data"),
    ({"negative": " ", "positive": "good"}, "teacher.zero_shot.negative: the description is empty"),
])
def test_descriptions_must_match_the_labels(descriptions, message):
    with pytest.raises(ConfigError, match=message):
        check_descriptions(descriptions, LABELS)


@pytest.mark.parametrize(("override", "message"), [
    ("teacher.zero_shot={negative: '', positive: good}", "teacher.zero_shot.negative: the description is empty"),
    ("teacher.zero_shot={negative: bad}", "teacher.zero_shot: expected a description for each of at least 2"),
    ("teacher.zero_shot={negative: , positive: good}", "teacher.zero_shot.negative: expected a string"),
    ("teacher.zero_shot=[bad, good]", "teacher.zero_shot: expected a mapping"),
])
def test_schema_refuses_bad_descriptions_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(REPO / "params.yaml", [override])
    assert "\n" not in str(err.value)


def test_schema_refuses_finetuning_a_zero_shot_teacher():
    with pytest.raises(ConfigError, match="teacher.finetune: true contradicts teacher.zero_shot"):
        load_config(REPO / "params.yaml", ["teacher.zero_shot={a: x, b: y}", "teacher.finetune=true"])


# ------------------------------------------------------------------------------ the pipeline


def _write_files(folder: Path, unlabelled_train: bool = True) -> dict[str, Path]:
    """Movie snippets as files: a train file (without its label column when `unlabelled_train`), labelled val
    and test files."""
    from tasks.infra.embedded import read_embedded

    folder.mkdir(parents=True, exist_ok=True)
    rows = read_embedded("movies").sample(260, random_state=0).reset_index(drop=True)
    files = {}
    for split, part in (("train", rows.iloc[:180]), ("val", rows.iloc[180:220]), ("test", rows.iloc[220:])):
        files[split] = folder / f"{split}.csv"
        (part[["text"]] if split == "train" and unlabelled_train else part).to_csv(files[split], index=False)
    return files


def _workspace(tmp_path: Path, tiny_dir: Path, unlabelled_train: bool = True, **extra) -> tuple[Path, list[str]]:
    """`_write_files`, and params.yaml with the tiny teacher in zero-shot mode on them. Returns (root, CLI arguments)."""
    files = _write_files(tmp_path, unlabelled_train)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY_PARAMS.items():
        params[section].update(values)
    params["teacher"].update(model=str(tiny_dir), zero_shot=DESCRIPTIONS)
    params["ingest"].update(source="files", files={s: str(p) for s, p in files.items()}, max_rows=None)
    params["base"].update(max_length=32)
    params["distill"].update(student_layers=2, alpha_cos=0.0)
    for section, values in extra.items():
        params[section].update(values)
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root, ["--params", str(root / "params.yaml"), "--root", str(root)]


@pytest.fixture(scope="module")
def zero_shot_run(tmp_path_factory, tiny_teacher_dir):
    """`kdistill run` in zero-shot mode on an unlabelled train file; the tests read what it left."""
    root, args = _workspace(tmp_path_factory.mktemp("zs"), tiny_teacher_dir)
    code = main([*args, "run"])
    return root, code


def test_run_in_zero_shot_mode_needs_no_train_label(zero_shot_run):
    root, code = zero_shot_run
    assert code == 0
    paths = Paths(root)
    train = pd.read_parquet(paths.split("train"))
    assert len(train) == 180 and (train["label"] == UNLABELLED).all()
    summary = json.loads(paths.summary.read_text())
    assert summary["splits"]["train"]["unlabelled"] == 180 and summary["labels"] == LABELS
    assert json.loads((paths.reports / "validation.json").read_text())  # the processed suite passed
    teacher = json.loads((paths.reports / "teacher.json").read_text())
    assert teacher["finetuned"] is False and teacher["zero_shot"]["descriptions"] == DESCRIPTIONS
    assert teacher["zero_shot"]["centred_on"] == 180 and "accuracy" in teacher["zero_shot"]["uncentred_test"]
    assert 0 <= teacher["test"]["accuracy"] <= 1 and "f1_macro" in teacher["test"]
    distill = json.loads((paths.reports / "distill.json").read_text())
    assert distill["transfer_rows"] == {"labelled": 0, "unlabelled": 180}
    assert distill["history"] and all(h.get("ce", 0) == 0 for h in distill["history"])  # soft targets only
    metrics = json.loads((paths.reports / "metrics.json").read_text())
    assert metrics["teacher"]["accuracy"] == pytest.approx(teacher["test"]["accuracy"], abs=1e-6)


def test_unlabelled_train_is_refused_outside_zero_shot_mode(zero_shot_run):
    root, _ = zero_shot_run
    cfg = load_config(root / "params.yaml", ["teacher.zero_shot=null"])
    from tasks.validate import validate

    # The same processed splits, validated without zero-shot mode: train's missing labels are an error.
    with pytest.raises(DataError, match="train.parquet: .*label_in_set"):
        validate(cfg, Paths(root))


def test_ingest_refuses_a_train_file_without_labels_outside_zero_shot_mode(tmp_path, tiny_teacher_dir):
    from tasks.ingest import ingest

    root, _ = _workspace(tmp_path, tiny_teacher_dir)
    with pytest.raises(DataError, match="label"):
        ingest(load_config(root / "params.yaml", ["teacher.zero_shot=null"]), Paths(root))


def test_a_partly_labelled_train_file_keeps_its_labels_in_zero_shot_mode_only(tmp_path, tiny_teacher_dir):
    from tasks.ingest import ingest

    root, _ = _workspace(tmp_path, tiny_teacher_dir, unlabelled_train=False)
    train = pd.read_csv(tmp_path / "train.csv")
    train.loc[::2, "label"] = None  # every other row without a label
    train.to_csv(tmp_path / "train.csv", index=False)
    summary = ingest(load_config(root / "params.yaml"), Paths(root))
    assert summary["splits"]["train"]["unlabelled"] == 90 and sum(summary["splits"]["train"]["counts"].values()) == 90
    with pytest.raises(DataError, match="label"):
        ingest(load_config(root / "params.yaml", ["teacher.zero_shot=null"]), Paths(root))


def test_unlabelled_train_without_a_val_file_is_one_line(tmp_path, tiny_teacher_dir, capsys):
    _, args = _workspace(tmp_path, tiny_teacher_dir)
    assert main([*args, "-S", "ingest.files.val=null", "ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ingest.files.val: required when the train split has unlabelled rows" in err[0]


def test_zero_shot_without_unlabelled_text_is_one_line(tmp_path, tiny_teacher_dir, capsys):
    _, args = _workspace(tmp_path, tiny_teacher_dir, unlabelled_train=False)
    for stage in ("ingest", "validate", "teacher"):
        assert main([*args, stage]) == 0, stage
    capsys.readouterr()
    assert main([*args, "distill"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher.zero_shot: no unlabelled text for the zero-shot teacher to label" in err[0]


def test_a_label_without_a_description_stops_the_teacher_in_one_line(zero_shot_run, capsys):
    root, _ = zero_shot_run
    args = ["--params", str(root / "params.yaml"), "--root", str(root)]
    assert main([*args, "-S", "teacher.zero_shot={negative: a bad film, neutral: an average film}", "teacher"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher.zero_shot.neutral: not a label of the data" in err[0]


def test_the_teacher_gate_applies_to_a_zero_shot_teacher(zero_shot_run):
    root, _ = zero_shot_run
    cfg = load_config(root / "params.yaml", ["teacher.min_accuracy=1.0"])
    from tasks.infra.errors import GateError

    with pytest.raises(GateError, match="teacher gate"):
        run_stage("teacher", cfg, Paths(root))


# ------------------------------------------------------------------------------ orchestrators


def test_dvc_stages_declare_the_zero_shot_key():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in ("ingest", "validate", "distill"):
        assert "teacher.zero_shot" in stages[stage]["params"], stage
    assert "teacher" in stages["teacher"]["params"]  # the whole section


def test_prefect_form_takes_descriptions_as_a_mapping(tmp_path):
    from flows.parameters import TeacherParams, check_overrides, to_overrides

    schema = TeacherParams.model_json_schema()["properties"]["zero_shot"]
    assert {"type": "object", "additionalProperties": {"type": "string"}} in schema["anyOf"]
    params = TeacherParams(zero_shot=DESCRIPTIONS)
    overrides = to_overrides({"teacher": params})
    assert overrides == {"teacher": {"zero_shot": DESCRIPTIONS}}
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    check_overrides(overrides, tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match="teacher.zero_shot.negative: the description is empty"):
        check_overrides({"teacher": {"zero_shot": {"negative": "", "positive": "good"}}}, tmp_path / "params.yaml")
    with pytest.raises(ValueError):
        TeacherParams(zero_shot=["not", "a", "mapping"])
    # The flow's Custom run form (Prefect's parameter schema) shows it as a mapping of strings.
    from prefect.utilities.callables import parameter_schema

    from flows.training import training_pipeline

    form = parameter_schema(training_pipeline).model_dump()["definitions"]["TeacherParams"]["properties"]
    assert {"type": "object", "additionalProperties": {"type": "string"}} in form["zero_shot"]["anyOf"]
    # A run writes the form's values into the workspace's params.yaml, where the stages read them.
    from tasks.infra.params_file import apply_overrides

    apply_overrides(tmp_path / "params.yaml", overrides)
    assert load_config(tmp_path / "params.yaml").teacher.zero_shot == DESCRIPTIONS


def test_finetuning_a_student_on_an_unlabelled_train_split_is_one_line(zero_shot_run, capsys):
    root, _ = zero_shot_run
    args = ["--params", str(root / "params.yaml"), "--root", str(root)]
    assert main([*args, "-S", "finetune.method=full", "finetune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune.method=full: the train split has no labelled row" in err[0]


def test_the_drift_monitor_takes_an_unlabelled_training_split_as_its_reference(zero_shot_run):
    from tasks.models.monitor import load_monitor

    root, _ = zero_shot_run
    monitor = load_monitor(load_config(root / "params.yaml", ["drift.embedder=student"]), Paths(root))
    assert len(monitor.heldout) == 40  # the labelled val split, scored


def test_retraining_takes_over_once_labelled_batches_arrive(zero_shot_run, tiny_retrain_params):
    """The continual-learning loop on a zero-shot run: the teacher is fine-tuned on the first labelled batch."""
    from tests.conftest import embedded_sample

    root, _ = zero_shot_run
    incoming = root / "data" / "incoming" / "labelled"
    incoming.mkdir(parents=True, exist_ok=True)
    embedded_sample("tweets", 80, 1).to_csv(incoming / "tweets-1.csv", index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in tiny_retrain_params.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["--params", str(root / "params.yaml"), "--root", str(root), "retrain"]) == 0
    report = json.loads((root / "reports" / "retrain.json").read_text())
    assert report["teacher"]["train_rows"] > 0 and report["scores"]["teacher"]["new"] >= 0


@pytest.mark.slow
def test_dvc_repro_runs_a_zero_shot_pipeline(repo_copy):
    """`dvc repro` end to end in zero-shot mode on an unlabelled train file; a new description re-runs the teacher."""
    from tests.e2e.test_dvc_repro import DVC, ran, sh

    _write_files(repo_copy / "zs")
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["ingest"].update(source="files", max_rows=None,
                            files={s: f"zs/{s}.csv" for s in ("train", "val", "test")})
    params["teacher"]["zero_shot"] = DESCRIPTIONS
    params["base"]["max_length"] = 32
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh([DVC, "repro"], repo_copy)
    assert ran(out) == {"ingest", "validate", "teacher", "distill", "finetune", "evaluate", "promote"}
    teacher = json.loads((repo_copy / "reports" / "teacher.json").read_text())
    assert teacher["zero_shot"]["descriptions"] == DESCRIPTIONS and teacher["finetuned"] is False
    assert json.loads((repo_copy / "reports" / "distill.json").read_text())["transfer_rows"]["labelled"] == 0
    sh(["git", "add", "-A"], repo_copy)
    sh(["git", "commit", "-qm", "zero-shot baseline"], repo_copy)
    out = sh([DVC, "exp", "run", "-S", "teacher.zero_shot.positive=a film worth seeing"], repo_copy)
    assert {"teacher", "distill"} <= ran(out)
    teacher = json.loads((repo_copy / "reports" / "teacher.json").read_text())
    assert teacher["zero_shot"]["descriptions"]["positive"] == "a film worth seeing"
