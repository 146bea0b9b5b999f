"""The configuration reference (schema + params.yaml), the CLI reference (the argument parser), and
the deployments and schedule tables (flows/serve.py + params.yaml)."""

from __future__ import annotations

import ast
import os
import types
import typing
from typing import Annotated, Any, Literal

import yaml

from docs.gen.common import NOTE, ROOT, cell, table

# The order a reader meets the sections in: the pipeline first, then what runs after it.
SECTION_ORDER = ("base", "ingest", "validate", "teacher", "distill", "finetune", "evaluate", "promote", "inference",
                 "sweep", "score", "drift", "api", "retrain", "schedule")


def type_name(tp: Any) -> str:
    """A schema annotation as a reader writes it: 'int', 'number or null', 'list of int', 'one of ...'."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        name = " or ".join(type_name(a) for a in args)
        return f"{name} or null" if len(args) < len(typing.get_args(tp)) else name
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return {int: "int", float: "number", bool: "bool", str: "text"}.get(tp, getattr(tp, "__name__", str(tp)))


def _inner_bounds(tp: Any) -> str | None:
    """Bounds on the items of a list key (e.g. `sweep.depths`: each >= 1)."""
    from pydantic.fields import FieldInfo

    from tasks.infra.config import bounds

    todo = list(typing.get_args(tp))
    while todo:
        arg = todo.pop(0)
        if typing.get_origin(arg) is Annotated:
            metadata = []
            for m in typing.get_args(arg)[1:]:
                metadata.extend(m.metadata if isinstance(m, FieldInfo) else [m])
            found = bounds(FieldInfo(annotation=typing.get_args(arg)[0], metadata=metadata))
            if found:
                return f"each {found}"
        todo.extend(typing.get_args(arg))
    return None


def _default(value: Any) -> str:
    """A params.yaml value as the reader would write it in YAML (flow style, one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return f"`{text.removesuffix('...').strip()}`"


def configuration_page() -> str:
    """docs/reference/configuration.md: every params.yaml key, section by section."""
    from tasks.infra.config import SECTIONS, bounds, choices

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    out = ["# Configuration reference", "", NOTE.format(source="tasks/infra/config.py and params.yaml"), "",
           "`params.yaml` holds one section per stage and service. Its schema is written once, in "
           "`tasks/infra/config.py` (one pydantic model per section): the CLI, the DVC stages and the Prefect form "
           "all read it from there, and a test keeps params.yaml's keys equal to the schema's. **Default** is "
           "the value params.yaml ships; where the schema's own fallback differs, it follows in parentheses. "
           "**Bounds** are checked when the file is read: a value outside them, a wrong type or an unknown key "
           "fails in one line naming the key, before any work. Override a key for one command with "
           "`kdistill -S section.key=value ...`, `dvc exp run -S section.key=value`, or the Prefect form.", ""]
    order = [s for s in SECTION_ORDER if s in SECTIONS] + [s for s in SECTIONS if s not in SECTION_ORDER]
    for section in order:
        model = SECTIONS[section]
        doc = (model.__doc__ or "").strip().splitlines()[0]
        out += [f"## {section}", "", doc.removeprefix(f"{section}:").strip().capitalize(), ""]
        rows = []
        for name, field in model.model_fields.items():
            key = f"{section}.{name}"
            values = choices(field)
            limits = "one of " + ", ".join(f"`{v}`" for v in values) if values else (
                bounds(field) or _inner_bounds(field.annotation) or "")
            shipped = params.get(section, {}).get(name) if name in params.get(section, {}) else None
            schema_default = field.get_default(call_default_factory=True)
            default = _default(shipped)
            if shipped != schema_default:
                default += f" (schema: {_default(schema_default)})"
            rows.append([f"`{key}`", type_name(field.annotation), cell(limits), default,
                         cell(field.description or "")])
        out += [table(["key", "type", "bounds", "default", "description"], rows), ""]
    return "\n".join(out)


def cli_page() -> str:
    """docs/reference/cli.md: `kdistill --help` and each subcommand's --help, from the parser itself."""
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: fix it so the page is the same everywhere
    from tasks.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    out = ["# Command-line reference", "", NOTE.format(source="the argument parser of tasks/cli.py"), "",
           "`kdistill` is installed into `.venv/bin/` by `make venv`; `python -m tasks.cli` is the same command. "
           "The global options (`--params`, `--root`, `-S`, `-q`) go before the subcommand: "
           "`kdistill --root runs/quick -S distill.epochs=2 distill`. Exit codes: 0 done, 2 a user mistake "
           "(one line names it), 3 a failed gate.", "", "## kdistill", "", "```", parser.format_help().strip(), "```", ""]
    for name, child in sub.choices.items():
        out += [f"## kdistill {name}", "", "```", child.format_help().strip(), "```", ""]
    return "\n".join(out)


def deployments() -> list[dict]:
    """The deployments of flows/serve.py's DEPLOYMENTS, read from its source (no Prefect import)."""
    tree = ast.parse((ROOT / "flows" / "serve.py").read_text(encoding="utf-8"))
    spec_fields, spec_defaults, listed = [], {}, None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Spec":
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    spec_fields.append(item.target.id)
                    if item.value is not None:
                        spec_defaults[item.target.id] = ast.literal_eval(item.value)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEPLOYMENTS" for t in node.targets):
            listed = node.value
    out = []
    for call in listed.elts:
        spec = dict(spec_defaults)
        spec.update(zip(spec_fields, (ast.literal_eval(a) for a in call.args)))
        spec.update({k.arg: ast.literal_eval(k.value) for k in call.keywords})
        out.append(spec)
    return out


def deployments_table() -> str:
    """The deployments `make serve` registers: name, flow, schedule key and its params.yaml cron, limit."""
    schedule = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")).get("schedule", {})
    rows = []
    for spec in deployments():
        key = spec["schedule"]
        when = (f"`schedule.{key}`: " + (f"`{schedule.get(key)}`" if schedule.get(key) else "null (by hand)")
                if key else "by hand (or started by another flow)")
        limit = spec["concurrency"] if spec["concurrency"] else "none"
        rows.append([f"`{spec['name']}`", f"`{spec['flow']}`", when, cell(limit), cell(spec["description"])])
    return (f"`make serve` registers {len(rows)} deployments (`DEPLOYMENTS` in `flows/serve.py`; "
            "schedules from params.yaml):\n\n"
            + table(["deployment", "flow", "schedule", "concurrency limit", "what"], rows))


def schedule_table() -> str:
    """The schedule keys and the drift trigger as params.yaml ships them, with the schema's descriptions."""
    from tasks.infra.config import schema_field

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    keys = [f"schedule.{k}" for k in params["schedule"]] + ["retrain.on_drift"]
    rows = []
    for key in keys:
        section, name = key.split(".")
        rows.append([f"`{key}`", _default(params[section][name]), cell(schema_field(key).description)])
    monitor, retrain = params["schedule"].get("drift_monitor"), params["schedule"].get("retrain")
    zone = params["schedule"].get("timezone", "UTC")
    said = (f"So, as shipped, the drift monitor runs {describe_cron(monitor, zone)}" if monitor
            else "So, as shipped, the drift monitor runs only by hand")
    said += (", and a drift verdict starts a retraining run at once" if params["retrain"]["on_drift"]
             else ", and a drift verdict does not start a retraining run")
    said += (f"; retraining also runs {describe_cron(retrain, zone)}, drift or not." if retrain
             else "; retraining has no schedule of its own.")
    return "As shipped in params.yaml:\n\n" + table(["key", "value", "meaning"], rows) + "\n\n" + said


_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def describe_cron(cron: str, zone: str) -> str:
    """A cron string in words for the common shapes ('every day at 06:00 UTC'), else the string itself."""
    minute, hour, day, month, weekday = cron.split()
    if minute.isdigit() and hour.isdigit() and day == "*" and month == "*":
        at = f"at {int(hour):02d}:{int(minute):02d} {zone}"
        if weekday == "*":
            return f"every day {at}"
        if weekday.isdigit() and int(weekday) <= 7:
            return f"every {_DAYS[int(weekday) % 7]} {at}"
    if minute.isdigit() and hour == "*" and day == month == weekday == "*":
        return f"every hour at minute {int(minute)}"
    return f"on the cron `{cron}` ({zone})"


# What each layer of the code is for: the one hand-written part of the layer tables. The modules in
# each are listed from the files, so a module moved or added shows up at the next `make docs`, and a
# folder missing here fails the generation.
LAYERS = {
    "tasks/core": "the distillation core, bottom layer: torch and transformers only",
    "tasks/infra": "infrastructure every layer shares, no domain code: the parameter schema, storage, readers, "
                   "locks, the drop folder, the production log, the registry's read side, errors, statistics, "
                   "provenance (the command, machine and date a results file records)",
    "tasks/quality": "Great Expectations: the validation suites and the engine that runs them",
    "tasks/models": "model kinds and model folders: loading, zero-shot teachers, contrastive tuning, the training and "
                    "prediction helpers the model stages share, the drift monitor's view of a model, the "
                    "static-embedding student, vocabulary pruning",
    "tasks": "the stages, peers that never import one another; `cli.py`, the `kdistill` command on top; "
             "small leaves every layer may ask",
    "tasks/lifecycle": "the model registry's write side, versions, the continual-learning cycle",
    "tasks/production": "serving variants, batch scoring, the HTTP API, the drift monitor",
    "tasks/sweep": "the compression sweep",
    "flows": "the Prefect flows and deployments, on top of the stages",
    "bench": "the benchmarks, outside the product; their results are reports/bench/*.json",
}


def _modules(folder: str) -> list[tuple[str, str]]:
    """(module file name, its docstring's first line) for each module of a folder of the repository."""
    out = []
    for path in sorted((ROOT / folder).glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        doc = (ast.get_docstring(tree) or "").strip().splitlines()
        out.append((path.name, doc[0] if doc else ""))
    return out


def _folders() -> list[str]:
    """The code folders that exist: every package under tasks/, plus tasks/, flows/ and bench/.

    Raises:
        KeyError: a folder has no line in LAYERS (write what it is for).
    """
    found = ["tasks"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tasks").iterdir()
                               if p.is_dir() and any(p.glob("*.py")))
    found += [f for f in ("flows", "bench") if (ROOT / f).is_dir()]
    missing = [f for f in found if f not in LAYERS]
    if missing:
        raise KeyError(f"docs/gen/reference.py LAYERS: no description of {', '.join(missing)}")
    return sorted(found, key=list(LAYERS).index)


def layers_table() -> str:
    """README's layer table: each folder, what it is for, its modules."""
    rows = [[f"`{folder}/`", LAYERS[folder], ", ".join(f"`{name}`" for name, _ in _modules(folder))]
            for folder in _folders()]
    return table(["folder", "what lives there", "modules"], rows)


def layout_page() -> str:
    """docs/reference/layout.md: every module of every layer, with the first line of its docstring."""
    out = ["# Code layout", "", NOTE.format(source="the modules' own docstrings"), "",
           "The code is grouped by layer, so `ls tasks/` shows the architecture. A layer imports only from "
           "the layers below it: the core from torch and transformers, the stages from the core, the shared "
           "layers and the model kinds, the lifecycle and production layers from those (never from each other), "
           "and the command line and the flows from everything. Each stage is a plain typed function in "
           "`tasks/STAGE.py`; `dvc.yaml`, the command line and the flows only call them, and each DVC stage "
           "lists every module its code imports (`tests/code/test_dvc_deps.py`; which stages an edit re-runs: "
           "[What an edit re-runs](../stage-deps.md)). The allowed import directions are declared in "
           "`pyproject.toml` (`[tool.importlinter]`) and checked by `lint-imports` in `make test` "
           "(`tests/code/test_import_contracts.py`).", ""]
    for folder in _folders():
        out += [f"## `{folder}/`", "", LAYERS[folder][0].upper() + LAYERS[folder][1:] + ".", "",
                table(["module", "what it is"], [[f"`{name}`", cell(doc)] for name, doc in _modules(folder)]), ""]
    return "\n".join(out)
