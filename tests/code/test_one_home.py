"""One home per concern (issue 15): helpers that exist once are not written again elsewhere in tasks/.

A source scan, since the duplicates it guards against were copies that behaved the same until one of
them changed. Which package may import which is not here: pyproject.toml's import contracts declare
the layers and tests/code/test_import_contracts.py runs import-linter on them.
"""

from __future__ import annotations

import re
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"
FLOWS = TASKS.parent / "flows"


def sources(*folders: Path) -> dict[str, str]:
    """Module path (relative, posix) -> source text, of tasks/ (or of `folders`)."""
    return {p.relative_to(TASKS.parent).as_posix(): p.read_text(encoding="utf-8")
            for folder in folders or (TASKS,) for p in folder.rglob("*.py")}


def test_softmax_lives_in_predict():
    """Class probabilities come from tasks.core.predict.softmax (log_softmax in the loss is another thing)."""
    # torch.softmax, F.softmax, tensor.softmax, a second def, or exp of logits normalised by hand
    written = re.compile(r"\.softmax\(|def softmax\(|np\.exp\([^)]*logits")
    elsewhere = [path for path, text in sources().items()
                 if path != "tasks/core/predict.py" and written.search(text)]
    assert elsewhere == []


def test_mean_pooling_lives_in_the_loss_module():
    """Mean pooling over real tokens is tasks.core.loss.mean_pool (the cache, distill and drift all pool)."""
    written = re.compile(r"\*\s*mask\)\.sum\(|mask\.sum\(")
    elsewhere = [path for path, text in sources().items() if path != "tasks/core/loss.py" and written.search(text)]
    assert elsewhere == []


def test_serving_variants_are_the_schemas():
    """export.VARIANTS is asked of the schema (inference.variant's choices but auto), not written again."""
    from tasks.infra.config import CHOICES
    from tasks.production.export import VARIANTS

    assert set(VARIANTS) == CHOICES["inference.variant"] - {"auto"} and VARIANTS[0] == "torch-fp32"
    assert '"onnx-int8")' not in (TASKS / "production" / "export.py").read_text(encoding="utf-8")


def test_loss_weights_are_read_from_the_config_in_one_place():
    """distill and retraining build the loss weights with tasks.distill.loss_weights, field by field."""
    from tasks.core.loss import LossWeights
    from tasks.distill import loss_weights
    from tasks.infra.config import DistillConfig

    dc = DistillConfig(temperature=3.0, alpha_kd=0.2, alpha_ce=0.7, alpha_cos=0.1)
    assert loss_weights(dc) == LossWeights(temperature=3.0, alpha_kd=0.2, alpha_ce=0.7, alpha_cos=0.1)
    built = [path for path, text in sources().items() if "LossWeights(" in text and "class LossWeights(" not in text]
    assert built == ["tasks/distill.py"]


def test_no_module_imports_another_modules_private_names():
    """A helper another module needs is public in its home (score took registry._file_lock and score._label_name;
    flows/retrain.py took flows.training._run_source)."""
    private = re.compile(r"^\s*from ((?:tasks|flows)\.[\w.]+) import (\([^)]*\)|[^#\n]*)", re.MULTILINE)
    found = [f"{path}: {module}.{name}" for path, text in sources(TASKS, FLOWS).items()
             for module, names in private.findall(text)
             for name in re.findall(r"\b_\w+", names)]
    assert found == []
