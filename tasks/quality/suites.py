"""The rules of the three suites, declared as data: raw input, processed splits, new batches.

A `Rule` names one Great Expectations expectation (by name, so this module needs no GE import), a
severity (an 'error' stops the run, a 'warning' is reported and the run goes on) and the two halves
of its message. Row rules also carry `row_check`, the same test as a pandas predicate: ingest
streams a big file through those chunk by chunk and stops at the first broken row without loading
the file; GE then runs the whole suite on the loaded data for the reports. Rules read derived
columns (`label_kind`, `text_in_train`, `tokens`, ...) that the `add_*_columns` functions compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.infra.config import Config, ValidateConfig
from tasks.infra.tables import BLANK_REGEX, is_blank, label_kind, lone_surrogate, normalise_label

KIND_WORDS = {"int": "an integer", "str": "a string"}
# A processed row without a label: only the train split of a zero-shot run (`teacher.zero_shot`) may hold
# one. The same value as tasks.core.data.IGNORE_LABEL, which the distillation loss skips (not imported
# from there: that pulls in torch, and ingest's streaming scan must stay light); a test checks they agree.
UNLABELLED = -100


def labels_optional(cfg: Config, split: str) -> bool:
    """Whether `split` may hold rows without a label: the train split in zero-shot mode, and nothing else."""
    return split == "train" and cfg.teacher.zero_shot is not None


@dataclass(frozen=True)
class Rule:
    """One check, declared as data: which GE expectation, how bad a failure is, how to explain it.

    `problem` and `expected` are message fragments; `problem` may use `{rows}` ("3 rows"),
    `{observed}` (GE's observed value) and `{missing}` (values or columns missing from a required set).
    """

    name: str
    severity: str  # error | warning
    # A GE expectation class, or its name in great_expectations.expectations: by name, this module
    # needs no GE import (~5 s), and ingest's streaming scan can fail a bad file without it.
    expectation: str | type
    kwargs: dict[str, Any]
    problem: str
    expected: str
    example_column: str | None = None  # column shown for example rows; default: the checked one
    show: str = "value"  # value | length: what an example row shows of its value
    row_check: Callable[[pd.DataFrame], pd.Series] | None = None  # True where a row breaks the rule


def _q(name: str) -> str:
    """A column name quoted for a message, with braces escaped for `str.format`."""
    return repr(name).replace("{", "{{").replace("}", "}}")


def text_rules(vcfg: ValidateConfig, column: str = "text") -> list[Rule]:
    """Row rules on a raw text column: present, a string, not blank, not absurdly long."""
    col, most = _q(column), vcfg.max_text_chars
    return [
        Rule("text_not_null", "error", "ExpectColumnValuesToNotBeNull", {"column": "text"},
             f"{{rows}} with no text in column {col} (empty, or a marker such as NaN)", "a text in every row",
             row_check=lambda f: f["text"].isna()),
        Rule("text_is_string", "error", "ExpectColumnValuesToBeInSet", {"column": "text_type", "value_set": ["str"]},
             f"{{rows}} whose {col} is not a string", "text as a string", example_column="text",
             row_check=lambda f: f["text_type"].notna() & f["text_type"].ne("str")),
        # JSON allows "\ud800" alone; no tokenizer can encode it (and no Parquet file can hold it).
        Rule("text_unicode", "error", "ExpectColumnValuesToBeInSet", {"column": "text_surrogate", "value_set": [False]},
             f"{{rows}} whose {col} holds a lone UTF-16 surrogate (not valid Unicode, shown as \ufffd)",
             "valid Unicode text (a JSON \\ud800-style escape without its pair?)", example_column="text",
             row_check=lambda f: f["text_surrogate"]),
        Rule("text_not_blank", "error", "ExpectColumnValuesToNotMatchRegex", {"column": "text", "regex": BLANK_REGEX},
             f"{{rows}} whose {col} is blank (whitespace or invisible characters only)", "a non-blank text",
             row_check=_text_check(is_blank)),
        Rule("text_max_chars", "error", "ExpectColumnValueLengthsToBeBetween", {"column": "text", "max_value": most},
             f"{{rows}} whose {col} is longer than validate.max_text_chars",
             f"at most {most} characters (a longer text is most often a stray quote that swallowed rows)",
             show="length", row_check=_text_check(lambda t: len(t) > most)),
    ]


def _text_check(test: Callable[[str], bool]) -> Callable[[pd.DataFrame], pd.Series]:
    """A row check applying `test` to each string text (other values pass: their own rules judge them).

    A plain map on purpose: pandas' `.str` methods on a chunk of long texts briefly take several
    times its memory, which the bounded scan cannot afford.
    """
    return lambda frame: frame["text"].map(lambda t: isinstance(t, str) and test(t)).astype(bool)


def label_rules(column: str, labels: list[str] | None, kind: str | None, required: bool = True) -> list[Rule]:
    """Row rules on a raw label column: present (when `required`), of one kind, and in the label set when one is given."""
    col = _q(column)
    rules = [Rule("label_not_null", "error", "ExpectColumnValuesToNotBeNull", {"column": "label"},
                  f"{{rows}} with no label in column {col}", "a label in every row",
                  row_check=lambda f: f["label"].isna())] if required else []
    rules += [  # A column of 0.5s and 0.25s is a score, never a class: one "class" per distinct value.
             Rule("label_not_fraction", "error", "ExpectColumnValuesToNotBeInSet",
                  {"column": "label_kind", "value_set": ["fraction"]},
                  f"{{rows}} whose {col} is a fractional number (a score, not a class)",
                  "class names or integer class ids (turn scores into classes first, e.g. score > 0)",
                  example_column="label", row_check=lambda f: f["label_kind"].eq("fraction"))]
    if kind:
        rules.append(Rule(
            "label_kind", "error", "ExpectColumnValuesToBeInSet", {"column": "label_kind", "value_set": [kind]},
            f"{{rows}} whose {col} is not {KIND_WORDS[kind]}, unlike most labels",
            "labels of one kind, all integers or all strings", example_column="label",
            row_check=lambda f: f["label_kind"].notna() & f["label_kind"].ne(kind)))
    if labels:
        rules.append(Rule(
            "label_in_set", "error", "ExpectColumnValuesToBeInSet", {"column": "label_name", "value_set": labels},
            f"{{rows}} whose {col} is not in the label set", f"one of {', '.join(labels)} (ingest.label_names)",
            example_column="label", row_check=lambda f: f["label_name"].notna() & ~f["label_name"].isin(labels)))
    return rules


def raw_rules(cfg: Config, split: str, labels: list[str] | None, kind: str | None,
              columns: tuple[str, str] = ("text", "label"), with_train: bool = False) -> list[Rule]:
    """The raw-input suite: what a labelled file must meet before ingest writes anything.

    Args:
        cfg: the whole config (`validate` thresholds, `ingest.min_rows`, `teacher.zero_shot`).
        split: train | val | test; `min_classes` and `min_rows` apply to train only. In zero-shot mode
            the train split's labels are optional (`labels_optional`): no `label_not_null`, no `min_classes`.
        labels: the configured label names, or None when any labels are accepted.
        kind: the labels' majority kind ('int' or 'str'), which every label must share.
        columns: the source's names for text and label, for messages only (the frame uses text, label).
        with_train: add `no_leakage` (needs the derived `text_in_train`).

    Returns:
        Schema and row rules first, so the first failing error is the most basic one.
    """
    vcfg, (text, label) = cfg.validate, columns
    share, optional = vcfg.max_duplicate_share, labels_optional(cfg, split)
    rules = [Rule("schema_columns", "error", "ExpectTableColumnsToMatchSet",
                  {"column_set": ["text", "label"], "exact_match": False},
                  "columns {missing} are missing", f"columns {text!r} and {label!r}")]
    rules += text_rules(vcfg, text) + label_rules(label, labels, kind, required=not optional)
    rules += [
        Rule("label_spelling", "error", "ExpectColumnValuesToBeInSet",
             {"column": "label_clash", "value_set": [False]},
             f"{{rows}} whose {_q(label)} differs from another label only in letter case",
             "one spelling per label", example_column="label"),
        # `mostly`: at most `share` of the rows may repeat an earlier row's text.
        Rule("duplicates", "error", "ExpectColumnValuesToBeInSet",
             {"column": "text_repeat", "value_set": [False], "mostly": 1.0 - share},
             "{rows} repeating the text of an earlier row",
             f"at most validate.max_duplicate_share={share} of rows (ingest drops repeats below that)",
             example_column="text"),
        Rule("label_conflicts", "warning", "ExpectColumnValuesToBeInSet",
             {"column": "label_conflict", "value_set": [False]}, "{rows} whose text also occurs with another label",
             "one label per text (ingest drops such texts)", example_column="text"),
    ]
    if split == "train":
        rules.append(Rule("min_rows", "error", "ExpectTableRowCountToBeBetween", {"min_value": cfg.ingest.min_rows},
                          "{observed} rows", f"at least ingest.min_rows={cfg.ingest.min_rows}"))
    if split == "train" and not optional:
        rules += [
            Rule("min_classes", "error", "ExpectColumnUniqueValueCountToBeBetween",
                 {"column": "label_name", "min_value": 2}, f"{{observed}} distinct label(s) in {_q(label)}",
                 "at least 2 classes"),
        ]
    if with_train:
        # An error already at ingest: given val/test files that share texts with train would make
        # every later metric optimistic, and stopping here leaves data/processed/ untouched.
        rules.append(Rule("no_leakage", "error", "ExpectColumnValuesToBeInSet",
                          {"column": "text_in_train", "value_set": [False]}, "{rows} whose text is also in train",
                          "no text shared with the train file", example_column="text"))
    return rules


def batch_rules(vcfg: ValidateConfig, labels: list[str] | None, labelled: bool,
                max_length: int | None = None) -> list[Rule]:
    """The new-batch suite (scoring and retraining): the raw schema and row rules, with or without labels.

    Args:
        vcfg: the thresholds.
        labels: the label names of the trained model; required when `labelled`.
        labelled: whether the batch must carry a `label` column.
        max_length: when given (and the frame has token columns), add the token rules.
    """
    columns = ["text", "label"] if labelled else ["text"]
    rules = [Rule("schema_columns", "error", "ExpectTableColumnsToMatchSet",
                  {"column_set": columns, "exact_match": False}, "columns {missing} are missing",
                  "columns " + " and ".join(repr(c) for c in columns)),
             Rule("min_rows", "error", "ExpectTableRowCountToBeBetween", {"min_value": 1},
                  "{observed} rows", "at least one row")]
    rules += text_rules(vcfg)
    if labelled:
        rules += label_rules("label", labels, None)
    if max_length:
        rules += token_rules(vcfg, max_length)
    return rules


def token_rules(vcfg: ValidateConfig, max_length: int) -> list[Rule]:
    """Length in tokens: texts cut at `max_length` (warning above a share), texts with no token (error)."""
    share = vcfg.max_truncated_share
    return [
        Rule("empty_tokens", "error", "ExpectColumnValuesToBeBetween", {"column": "content_tokens", "min_value": 1},
             "{rows} whose text has no tokens once tokenised", "at least one token per text", example_column="text"),
        # `mostly`: at most `share` of the rows may be longer than max_length.
        Rule("truncated", "warning", "ExpectColumnValuesToBeBetween",
             {"column": "tokens", "max_value": max_length, "mostly": 1.0 - share},
             f"{{rows}} longer than base.max_length={max_length} tokens (cut when encoded)",
             f"at most validate.max_truncated_share={share} of rows cut"),
    ]


def processed_rules(cfg: ValidateConfig, labels: list[str], split: str, max_length: int | None = None,
                    unlabelled_ok: bool = False) -> list[Rule]:
    """The rules every processed split must meet; `no_leakage` applies to val and test only.

    Args:
        cfg: the thresholds (`validate` section of params.yaml).
        labels: the label names from summary.json; valid labels are `range(len(labels))`.
        split: train | val | test.
        max_length: `base.max_length`; when given, the token rules are added (the frame needs
            `add_token_columns`).
        unlabelled_ok: rows may be UNLABELLED (`labels_optional`: train in zero-shot mode); the
            class rules (`labels_all_present`, `class_rows`) then do not apply.

    Returns:
        The rules, schema first, so the first failing error is the most basic one.
    """
    ids = list(range(len(labels)))
    names = ", ".join(f"{i} ({name})" for i, name in enumerate(labels))
    allowed, allowed_words = (ids + [UNLABELLED], f"{names} or {UNLABELLED} (no label)") if unlabelled_ok else (ids, names)
    lo, hi = cfg.min_text_chars, cfg.max_text_chars
    rules = [
        Rule("schema_columns", "error", "ExpectTableColumnsToMatchSet",
             {"column_set": ["text", "label"], "exact_match": False},
             "columns {missing} are missing", "columns text and label"),
        Rule("schema_text_type", "error", "ExpectColumnValuesToBeOfType", {"column": "text", "type_": "str"},
             "{rows} whose text is not a string", "str"),
        Rule("schema_label_type", "error", "ExpectColumnValuesToBeOfType", {"column": "label", "type_": "int64"},
             "label has type {observed}", "int64"),
        Rule("text_not_null", "error", "ExpectColumnValuesToNotBeNull", {"column": "text"},
             "{rows} without text", "a text in every row"),
        Rule("text_not_blank", "error", "ExpectColumnValuesToNotMatchRegex", {"column": "text", "regex": r"^\s*$"},
             "{rows} with an empty or whitespace-only text", "non-blank text"),
        Rule("label_in_set", "error", "ExpectColumnValuesToBeInSet", {"column": "label", "value_set": allowed},
             "{rows} with a label outside the label set", f"labels among {allowed_words}"),
        # Every class must be learnable, so train must hold each; in val and test a rare class of a
        # many-class task (trec50 has classes of 3 rows) may be absent: its scores are then unmeasured.
        Rule("labels_all_present", "error" if split == "train" else "warning",
             "ExpectColumnDistinctValuesToContainSet", {"column": "label", "value_set": ids},
             "labels {missing} never occur", f"every one of {names}"),
        Rule("min_rows", "error", "ExpectTableRowCountToBeBetween", {"min_value": cfg.min_rows_per_split},
             "{observed} rows", f"at least validate.min_rows_per_split={cfg.min_rows_per_split}"),
        # A count per class, not a share: a 5% floor cannot hold for 50 classes, and 13% spam is fine.
        # `label_rows` is each row's class count, so the column minimum is the rarest class's count.
        Rule("class_rows", "error" if split == "train" else "warning", "ExpectColumnMinToBeBetween",
             {"column": "label_rows", "min_value": cfg.min_class_rows},
             "the rarest class has {observed} rows",
             f"every class at least validate.min_class_rows={cfg.min_class_rows} rows"),
        Rule("text_length", "warning", "ExpectColumnValueLengthsToBeBetween",
             {"column": "text", "min_value": lo, "max_value": hi},
             "{rows} with a text length outside the limits", f"{lo} to {hi} characters"),
        # `mostly` turns "unique" into "at most this share of rows may repeat a text".
        Rule("duplicates", "warning", "ExpectColumnValuesToBeUnique",
             {"column": "text", "mostly": 1.0 - cfg.max_duplicate_share},
             "{rows} whose text occurs more than once",
             f"at most validate.max_duplicate_share={cfg.max_duplicate_share} of rows"),
    ]
    if unlabelled_ok:  # a zero-shot teacher learns no class from train: its labels may be few, or none
        rules = [r for r in rules if r.name not in ("labels_all_present", "class_rows")]
    if max_length:
        rules += token_rules(cfg, max_length)
    if split != "train":
        # A derived boolean column keeps the expectation small: no train texts in its value_set.
        rules.append(Rule("no_leakage", "error", "ExpectColumnValuesToBeInSet",
                          {"column": "text_in_train", "value_set": [False]},
                          "{rows} whose text is also in train", "none", example_column="text"))
    return rules


# Value types for which equal values mean the same label (1 == 1.0 is fine; 1 == True is not).
_HOMOGENEOUS = {"string", "integer", "floating", "mixed-integer-float", "boolean", "empty"}


def _per_value(values: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """`fn` of each value, computed once per distinct value: labels have few, files have millions of rows."""
    if pd.api.types.infer_dtype(values, skipna=True) in _HOMOGENEOUS:
        codes, uniques = pd.factorize(values)
        results = np.array([fn(u) for u in uniques] + [fn(None)], dtype=object)  # code -1: missing
        return pd.Series(results[codes], index=values.index, dtype=object)
    cache: dict = {}

    def one(value: Any) -> Any:
        try:
            key = (type(value), value)
            if key not in cache:
                cache[key] = fn(value)
            return cache[key]
        except TypeError:  # unhashable (a list from JSON)
            return fn(value)

    return values.map(one)


def _label_name(value: Any) -> str | None:
    return str(normalise_label(value)) if label_kind(value) in ("int", "str") else None


def majority_kind(labels: pd.Series) -> str | None:
    """'int' or 'str', whichever most labels are; None when there are none of either."""
    kinds = _per_value(labels, label_kind)
    counts = kinds[kinds.isin(["int", "str"])].value_counts()
    return str(counts.index[0]) if len(counts) else None


def add_row_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a raw frame (text, optional label) with the derived columns the row rules read:
    `text_type`, `text_surrogate`, `label_kind` and `label_name` (the label as the name it will get).

    A lone surrogate in a text is replaced by U+FFFD in the copy: pandas (and so GE) cannot even hash it.
    """
    out = frame.copy()
    if "text" in out:
        text = out["text"] = out["text"].astype(object)
        if pd.api.types.infer_dtype(text, skipna=True) in ("string", "empty"):  # the usual case, vectorised
            out["text_type"] = pd.Series(np.where(text.isna(), None, "str"), index=text.index, dtype=object)
        else:
            out["text_type"] = text.map(lambda t: None if _missing(t) else type(t).__name__)
        out["text_surrogate"] = _surrogates(text)
        if out["text_surrogate"].any():
            out.loc[out["text_surrogate"], "text"] = text[out["text_surrogate"]].map(
                lambda t: t.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    if "label" in out:
        out["label_kind"] = _per_value(out["label"], label_kind)
        out["label_name"] = _per_value(out["label"], _label_name)
    return out


def _surrogates(text: pd.Series) -> pd.Series:
    """True where a text holds a lone UTF-16 surrogate; one encode of the whole chunk in the usual, clean case."""
    strings = [t for t in text if isinstance(t, str)]
    try:
        "".join(strings).encode("utf-8")
        return pd.Series(False, index=text.index)
    except UnicodeEncodeError:
        return text.map(lambda t: isinstance(t, str) and lone_surrogate(t) is not None).astype(bool)


def add_raw_columns(frame: pd.DataFrame, label_counts: pd.Series | None = None,
                    train_texts: set[str] | None = None) -> pd.DataFrame:
    """`add_row_columns`, plus the columns of the table rules: `text_repeat`, `label_clash`,
    `label_conflict`, `text_in_train`.

    Args:
        frame: raw values as read: `text` and, for labelled data, `label`.
        label_counts: rows per label name over every split, for `label_clash`; default: this frame's.
        train_texts: the train split's texts, for `text_in_train` (val and test only).
    """
    out = add_row_columns(frame)
    if "text" in out:
        is_str = out["text_type"].eq("str")
        out["text_repeat"] = is_str & out["text"].where(is_str).duplicated()
        if train_texts is not None:
            out["text_in_train"] = out["text"].map(lambda t: isinstance(t, str) and t in train_texts).astype(bool)
    if "label" in out:
        out["label_clash"] = out["label_name"].isin(rare_spellings(
            label_counts if label_counts is not None else out["label_name"].value_counts()))
        if "text" in out:
            named = out.dropna(subset=["label_name"])
            named = named[named["text_type"].eq("str")]
            per_text = named.groupby("text")["label_name"].nunique()
            conflicted = set(per_text.index[per_text > 1])
            out["label_conflict"] = out["text"].map(lambda t: isinstance(t, str) and t in conflicted).astype(bool)
    return out


def rare_spellings(counts: pd.Series) -> set[str]:
    """Label names that differ from a more frequent one only in letter case ('Positive' beside 'positive')."""
    keep: dict[str, str] = {}
    for name in counts.sort_values(ascending=False, kind="stable").index:
        keep.setdefault(str(name).casefold(), name)
    return {name for name in counts.index if keep[str(name).casefold()] != name}


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value))


def add_processed_columns(frame: pd.DataFrame, train_texts: set[str] | None = None, tokenizer: Any = None) -> None:
    """Add, in place, the derived columns of the processed rules: `label_rows`, `text_in_train`, tokens."""
    if "label" in frame and len(frame):
        frame["label_rows"] = frame["label"].map(frame["label"].value_counts()).astype("int64")
    if train_texts is not None and "text" in frame:
        frame["text_in_train"] = frame["text"].isin(train_texts)
    if tokenizer is not None:
        add_token_columns(frame, tokenizer)


def add_token_columns(frame: pd.DataFrame, tokenizer: Any) -> None:
    """Add, in place, `content_tokens` (tokens of the text alone) and `tokens` (with special tokens).

    Texts are tokenised without truncation, so `tokens > max_length` means the text gets cut.
    Non-string texts get NaN, which GE skips (their own rules report them).
    """
    if "text" not in frame:
        return
    is_str = frame["text"].map(lambda t: isinstance(t, str)).astype(bool)
    content = pd.Series(np.nan, index=frame.index)
    if is_str.any():
        ids = tokenizer(frame.loc[is_str, "text"].tolist(), add_special_tokens=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        content[is_str] = [len(i) for i in ids]
    frame["content_tokens"] = content
    frame["tokens"] = content + tokenizer.num_special_tokens_to_add(pair=False)
