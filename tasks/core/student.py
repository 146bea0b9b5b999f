"""Building a student from its teacher, the DistilBERT way: same width, fewer layers, each
student layer initialised from one teacher layer; embeddings, pooler and head copied."""

from __future__ import annotations

import copy
import re

import numpy as np
from transformers import AutoModelForSequenceClassification, PreTrainedModel

# The encoder's layer list in BERT, RoBERTa, ELECTRA (`encoder.layer.N.`) and DistilBERT
# (`transformer.layer.N.`); the key pattern is the one thing that differs between families.
_LAYER_KEY = re.compile(r"^(.*?(?:encoder|transformer)\.layers?\.)(\d+)(\..*)$")


def num_layers(model: PreTrainedModel) -> int:
    """The number of transformer layers of a model (any BERT-family config)."""
    return int(model.config.num_hidden_layers)


def default_layer_map(n_teacher: int, n_student: int) -> list[int]:
    """Which teacher layer initialises each student layer, by default.

    Every other layer when the teacher has twice the student's depth, with the DistilBERT map
    when the student depth is even: its upper half shifts up by one so that the top teacher
    layer is kept (12→6 gives 0,2,4,7,9,11; 6→3 gives 0,2,4). Otherwise layers evenly spread
    from the first to the last.

    Args:
        n_teacher: teacher depth.
        n_student: student depth, 1..n_teacher.

    Returns:
        n_student increasing teacher layer indices.
    """
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"student layers must be in 1..{n_teacher}, got {n_student}")
    if n_teacher % n_student == 0:
        stride = n_teacher // n_student
        shift = stride - 1 if n_student % 2 == 0 else 0
        return [i * stride + (shift if i >= n_student // 2 else 0) for i in range(n_student)]
    return [int(x) for x in np.round(np.linspace(0, n_teacher - 1, n_student))]


def check_layer_map(layer_map: list[int], n_teacher: int) -> None:
    """A layer map must name existing teacher layers, in increasing order."""
    if not layer_map:
        raise ValueError("layer map is empty")
    if any(not 0 <= i < n_teacher for i in layer_map):
        raise ValueError(f"layer map {layer_map}: indices must be in 0..{n_teacher - 1}")
    if any(b <= a for a, b in zip(layer_map, layer_map[1:])):
        raise ValueError(f"layer map {layer_map}: indices must be strictly increasing")


def build_student(teacher: PreTrainedModel, layer_map: list[int]) -> PreTrainedModel:
    """A model of the teacher's class and width with `len(layer_map)` layers, initialised from it.

    Student layer i gets a copy of teacher layer `layer_map[i]`; every other weight (embeddings,
    pooler, classifier head) is copied as is.

    Args:
        teacher: a sequence-classification model of the BERT family.
        layer_map: teacher layer index for each student layer.

    Returns:
        The student, in train mode, on the CPU.
    """
    check_layer_map(layer_map, num_layers(teacher))
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layer_map)
    config.distill_layer_map = list(layer_map)  # recorded in config.json for provenance
    student = AutoModelForSequenceClassification.from_config(config)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        match = _LAYER_KEY.match(key)
        src = f"{match[1]}{layer_map[int(match[2])]}{match[3]}" if match else key
        state[key] = source[src].detach().clone().cpu()
    student.load_state_dict(state, strict=True)
    return student.train()
