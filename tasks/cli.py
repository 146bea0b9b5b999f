"""The one command-line entry point: `kdistill <stage>`, `kdistill run`, `kdistill predict`.

DVC stages call the stage subcommands; the Prefect flows call the same stage functions.
A user mistake (bad params, bad input, failed gate) prints one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from tasks.infra.errors import UserError
from tasks.infra.logs import setup_logging

log = logging.getLogger("kd")

# Stage name -> (module, function, takes --resume). Imported lazily: `--help` stays instant.
STAGES = {
    "ingest": ("tasks.ingest", "ingest", False),
    "validate": ("tasks.validate", "validate", False),
    "teacher": ("tasks.teacher", "teacher", True),
    "distill": ("tasks.distill", "distill", True),
    "finetune": ("tasks.finetune", "finetune", True),
    "evaluate": ("tasks.evaluate", "evaluate", False),
    "promote": ("tasks.promote", "promote", False),
}
HELP = {
    "ingest": "read the source, encode labels, split; write data/processed/",
    "validate": "Great Expectations suite on the processed splits; write reports/validation*",
    "teacher": "fine-tune (if needed) and evaluate the teacher; write models/teacher/",
    "distill": "distil the student from the teacher; write models/distilled/",
    "finetune": "optional full or LoRA fine-tuning of the student; write models/student/",
    "evaluate": "teacher vs student: accuracy, F1, size, latency; write reports/metrics.json",
    "promote": "make the student the production model if it passed the gates and is no worse; "
               "write models/production/, models/registry.json",
}

# Operations on the production model, outside `run`: name -> (module, function, help).
OPERATIONS = {
    "score": ("tasks.production.score", "score", "label the new files in data/incoming/ with the production model; append "
              "them to data/production/ (bad files go to data/incoming/quarantine/)"),
    "drift": ("tasks.production.drift", "drift", "compare the latest window of data/production/ with the training data; "
              "write reports/drift/<timestamp>/ and print the verdict"),
    "api": ("tasks.production.api", "run_api", "serve POST /predict, GET /health, GET /model on http://127.0.0.1:8000 "
            "(api.host, api.port)"),
    "summary": ("tasks.evaluate", "print_summary", "print the teacher-vs-student table of reports/metrics.json"),
    "versions": ("tasks.lifecycle.registry", "list_versions", "list models/registry.json's versions (* = production)"),
}


def preflight(cfg) -> None:
    """Fail at once, before any stage runs, on a file or model folder the params name but lack."""
    from tasks.infra.errors import ConfigError
    from tasks.models.loading import resolve_model

    if cfg.ingest.source == "files":
        for split, path in cfg.ingest.files.items():
            if path and not Path(path).is_file():
                raise ConfigError(f"ingest.files.{split}: {path}: file not found")
    unlabeled = cfg.distill.unlabeled
    if unlabeled.get("source") == "file" and unlabeled.get("path") and not Path(unlabeled["path"]).is_file():
        raise ConfigError(f"distill.unlabeled.path: {unlabeled['path']}: file not found")
    resolve_model(cfg.teacher.model, "teacher.model")
    if cfg.distill.student_model:
        resolve_model(cfg.distill.student_model, "distill.student_model")
    check_model_params(cfg)


def check_model_params(cfg) -> None:
    """The params that must fit the models, checked against their config.json before any stage runs:
    the student's depth and layer map against the teacher's layers, base.max_length against positions.

    A hub id has no config.json on disk: its stages check it once they have loaded the model.
    """
    from tasks.core.student import check_layer_map
    from tasks.infra.errors import ConfigError
    from tasks.models.loading import check_max_length, saved_config

    dc, teacher = cfg.distill, saved_config(cfg.teacher.model, "teacher.model")
    layers = (teacher or {}).get("num_hidden_layers") or (teacher or {}).get("n_layers")
    if dc.student == "static":
        from tasks.models.static import check_dims, teacher_width

        check_dims(dc.static_dims, teacher_width(teacher or {}), f"the teacher {cfg.teacher.model!r}")
        if cfg.finetune.method == "lora":
            raise ConfigError("finetune.method: lora adapts attention and feed-forward layers, and the static "
                              "student (distill.student: static) has none; expected full or none")
    elif layers and not dc.student_model:
        where = f"the teacher {cfg.teacher.model!r} has {layers} layers"
        if dc.student_layers >= layers:
            raise ConfigError(f"distill.student_layers={dc.student_layers}: {where}; expected fewer (0: half of them)")
        if dc.layer_map:
            try:
                check_layer_map(dc.layer_map, layers)
            except ValueError as err:
                raise ConfigError(f"distill.layer_map: {err} ({where})") from None
    check_max_length(cfg.base.max_length, cfg.teacher.model, "teacher.model")
    if dc.student_model:
        check_max_length(cfg.base.max_length, dc.student_model, "distill.student_model")


def run_stage(name: str, cfg, paths, resume: bool = False):
    """Call one stage function by name."""
    module, func, resumable = STAGES[name]
    fn = getattr(importlib.import_module(module), func)
    return fn(cfg, paths, resume=resume) if resumable else fn(cfg, paths)


def predict_texts(model_dir: str, texts: list[str], max_length: int = 128, batch_size: int = 64,
                  variant: str = "torch-fp32", threads: int = 0, where: list[str] | None = None) -> list[dict]:
    """Label and class probabilities for each text, from any saved classifier folder.

    Args:
        model_dir: a saved Hugging Face classifier folder.
        texts: the texts to label.
        max_length: tokens kept of each text.
        batch_size: texts per forward pass (texts of similar length are batched together).
        variant: torch-fp32 | torch-int8 | torch-bf16 | onnx-fp32 | onnx-int8 (tasks.production.export.VARIANTS).
        threads: intra-op threads; 0 keeps the library default.
        where: how an error names each text (default "text 1", "text 2", ...).

    Returns:
        One dict per text: text, label, confidence, probabilities (label -> probability).

    Raises:
        DataError: a text has no tokens once tokenised (bidi marks or lone accents only), as the API refuses it.
    """
    import numpy as np

    from tasks.core.data import make_dataset
    from tasks.core.predict import softmax
    from tasks.infra.errors import DataError
    from tasks.production.export import load_predictor, predict_dataset
    from tasks.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir, key="--model")
    data = make_dataset(tokenizer, texts, None, max_length)
    empty = np.flatnonzero(data.lengths <= tokenizer.num_special_tokens_to_add(pair=False))
    if len(empty):
        name = where[empty[0]] if where else f"text {empty[0] + 1}"
        raise DataError(f"predict: {name} has no tokens once tokenised (marks or control characters only); "
                        "expected some words")
    predictor = load_predictor(model_dir, variant, threads)
    names = predictor.labels
    logits = predict_dataset(predictor, data, tokenizer.pad_token_id, batch_size)
    probs = softmax(logits)
    return [{"text": t, "label": names[int(p.argmax())], "confidence": round(float(p.max()), 6),
             "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}} for t, p in zip(texts, probs)]


def _predict(args, cfg, paths) -> None:
    from tasks.infra.registry_view import production_dir, recover

    args.model = args.model or str(paths.student)
    if Path(args.model).resolve() == production_dir(paths).resolve():
        recover(paths)  # production may be mid-swap from a killed promote: complete it (or roll it back) first
    texts = [(f"text {i}", text) for i, text in enumerate(args.texts, start=1)]
    if args.file:
        from tasks.infra.tables import read_table

        frame = read_table(args.file, args.text_column, None)
        texts += [(f"{args.file}: row {row + 1}", text) for row, text in zip(frame.index, frame["text"])]
    if not texts:
        raise UserError("predict: give texts as arguments or --file")
    for where, text in texts:
        check_text(where, text)
    where, texts = [w for w, _ in texts], [text for _, text in texts]
    from tasks.production.export import resolve_variant
    from tasks.models.loading import check_max_length

    check_max_length(cfg.base.max_length, args.model, "--model")
    variant = resolve_variant(args.variant or cfg.inference.variant, args.model, paths.reports / "bench" / "serving.json")
    log.info("predict: %s, variant %s, %d thread(s)", args.model, variant, cfg.inference.threads)
    for row in predict_texts(args.model, texts, cfg.base.max_length, variant=variant, threads=cfg.inference.threads,
                             where=where):
        print(json.dumps(row, ensure_ascii=False))


def check_text(where: str, text: object) -> None:
    """The rules the API applies to a text: a string, not blank, valid Unicode; else one line naming it."""
    from tasks.infra.errors import DataError
    from tasks.infra.tables import is_blank, lone_surrogate

    if not isinstance(text, str) or is_blank(text):
        raise DataError(f"predict: {where} is empty or blank (whitespace or invisible characters only); "
                        "expected some words")
    at = lone_surrogate(text)
    if at is not None:  # an argument with bytes that are not UTF-8 arrives as lone surrogates
        raise DataError(f"predict: {where}: character {at} is not valid Unicode; expected UTF-8 text")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so tests and docs can inspect it)."""
    from tasks.infra.config import CHOICES

    parser = argparse.ArgumentParser(prog="kdistill", description="Distil a BERT-family teacher into a small, "
                                     "fast student: one subcommand per pipeline stage.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="project root that data/, models/, reports/ live under")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S distill.temperature=4 (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, resumable) in STAGES.items():
        p = sub.add_parser(name, help=HELP[name])
        if resumable:
            p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p = sub.add_parser("run", help="all stages in order: " + " → ".join(STAGES))
    p.add_argument("--resume", action="store_true", help="resume the training stages from their checkpoints")
    p.add_argument("--from", dest="start", choices=list(STAGES), help="start at this stage")
    for name, (_, _, text) in OPERATIONS.items():
        sub.add_parser(name, help=text)
    p = sub.add_parser("retrain", help="one continual-learning cycle: gather new labelled batches and production "
                       "text, update the teacher, distil a warm-started challenger with replay, promote only if better")
    p.add_argument("--trigger", choices=["manual", "drift", "schedule"], default="manual",
                   help="why this cycle runs (recorded in the registry)")
    p.add_argument("--detail", help="what triggered it, e.g. a drift report folder")
    p = sub.add_parser("rollback", help="make an earlier promoted version the production model again")
    p.add_argument("version", type=int, help="a version of models/registry.json (see `kdistill versions`)")
    p.add_argument("--data", action="store_true", help="also restore the version's data snapshots from DVC")
    p = sub.add_parser("predict", help="label texts (arguments or --file) with a saved model; prints JSON lines")
    p.add_argument("texts", nargs="*", help="texts to label")
    p.add_argument("--model", default=None, help="model folder (default: models/student under --root)")
    p.add_argument("--file", help="a CSV/TSV/JSONL/Parquet file of texts")
    p.add_argument("--text-column", default="text")
    p.add_argument("--variant", choices=sorted(CHOICES["inference.variant"]),
                   help="serving variant (default: inference.variant in params.yaml)")
    p = sub.add_parser("sweep", help="compression sweep: students of params.yaml's sweep: space from the one teacher; "
                       "the cheapest within the accuracy budget is written into params.yaml's distill: section")
    p.add_argument("--no-apply", action="store_true", help="report the choice, leave params.yaml unchanged")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kdistill` console script."""
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    from tasks.infra.config import load_config
    from tasks.infra.storage import Paths

    try:
        cfg = load_config(args.params, args.set)
        paths = Paths(Path(args.root))
        if args.command not in ("predict", "retrain", "rollback") and args.command not in OPERATIONS:
            preflight(cfg)
        if args.command in ("teacher", "distill", "finetune"):
            from tasks.core.dist import init_distributed

            init_distributed()  # a no-op unless launched by torchrun / accelerate launch
        if args.command == "predict":
            _predict(args, cfg, paths)
        elif args.command == "retrain":
            from tasks.lifecycle.retrain import cycle_table, retrain

            report = retrain(cfg, paths, args.trigger, args.detail)
            print(cycle_table(report) if "scores" in report else report["reason"], file=sys.stderr)
            print(json.dumps({k: report.get(k) for k in ("version", "status", "promoted", "reason")}, indent=2))
        elif args.command == "sweep":
            from tasks.sweep.run import sweep

            sweep(cfg, paths, None if args.no_apply else Path(args.params))
        elif args.command == "rollback":
            from tasks.lifecycle.registry import rollback

            print(json.dumps(rollback(cfg, paths, args.version, args.data), indent=2, default=str))
        elif args.command in OPERATIONS:
            module, func, _ = OPERATIONS[args.command]
            result = getattr(importlib.import_module(module), func)(cfg, paths)
            if result is not None:
                print(json.dumps(result, indent=2, default=str))
        elif args.command == "run":
            names = list(STAGES)
            for name in names[names.index(args.start) if args.start else 0:]:
                run_stage(name, cfg, paths, resume=args.resume)
        else:
            run_stage(args.command, cfg, paths, resume=getattr(args, "resume", False))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
