"""What a person sees in the Prefect UI's Artifacts tab: markdown built from the stages' reports.

The builders are pure functions of the JSON the stages wrote (testable without Prefect); the
`publish_*` functions turn them into Prefect artifacts inside the running task.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.evaluate import format_number, metrics_table  # noqa: F401 (metrics_table: shared with the CLI)
from tasks.infra.storage import Paths

# What to do next, per stage whose gate can stop the pipeline.
GATE_HINTS = {
    "teacher": "The teacher is not good enough to teach. Train it longer (`teacher.epochs`, `teacher.lr`), "
               "use more data (`ingest.max_rows`), or lower `teacher.min_accuracy` on purpose.",
    "evaluate": "The student lost too much of the teacher's accuracy. Try more distillation epochs, another "
                "`distill.temperature`, `finetune.method: full`, or lower `evaluate.min_retention` on purpose.",
    "validate": "The data broke a validation rule: see the Data Docs linked in the validation artifact.",
}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def validation_markdown(report: dict, index: Path) -> str:
    """The verdict of reports/validation.json, with where the Data Docs are."""
    lines = [f"## Data validation: {'passed' if report.get('success') else 'FAILED'}", ""]
    for suite, body in report.get("suites", {}).items():
        lines.append(f"- `{suite}`: {body.get('evaluated')} checks, {body.get('failed')} failed, "
                     f"{body.get('warnings')} warnings")
        for f in body.get("failures", [])[:10]:
            lines.append(f"  - {f.get('severity')}: `{f.get('rule')}` on {f.get('split')} "
                         f"({f.get('unexpected_count')} rows)")
    lines += ["", f"Data Docs: [{index}]({index.as_uri()})"]
    return "\n".join(lines)


def latest_drift_report(paths: Paths) -> Path | None:
    """The newest reports/drift/<timestamp>/*.html, if the drift monitor has written one."""
    reports = sorted(paths.reports.glob("drift/*/*.html"))
    return reports[-1] if reports else None


def promotion_markdown(report: dict, registry: dict | None) -> str:
    """The promote stage's decision (reports/promote.json) and the current production version."""
    verdict = "promoted to production" if report.get("promoted") else "not promoted: production unchanged"
    lines = [f"## Candidate {report.get('version')}: {verdict}", "", f"Reason: {report.get('reason')}", ""]
    c = report.get("comparison")
    if c:  # candidate against production on the same test rows
        lines += [f"Candidate - production ({c['metric']}, {c['rows']} test rows): **{c['diff']:+.4f}**, "
                  f"{c['confidence']:.0%} interval {c['ci_low']:+.4f} .. {c['ci_high']:+.4f}, p = {c['p_value']:.3g} "
                  f"({'a significant gain' if c['significant_gain'] else 'a significant loss' if c['significant_loss'] else 'inside the noise'}).", ""]
    lines.append(f"Production is now version **{report.get('production_version')}**.")
    entry = next((v for v in reversed((registry or {}).get("versions", []))
                  if v.get("version") == report.get("production_version")), None)
    if entry:
        m = entry.get("metrics", {})
        lines.append(f"It was promoted {entry.get('time')} (accuracy {format_number(m.get('accuracy'))}, "
                     f"data hash `{entry.get('data_hash')}`, from {entry.get('source')}).")
    return "\n".join(lines)


def failure_markdown(stage: str, message: str, gate: bool) -> str:
    """A stopped run, said plainly: which stage, its own message, what to try."""
    title = f"## Stopped by the {stage} gate" if gate else f"## The {stage} stage failed"
    hint = GATE_HINTS.get(stage, "Fix the cause in params.yaml or the input, then run again; unchanged stages "
                                 "are skipped.")
    return "\n".join([title, "", f"> {message}", "", hint, "",
                      "Nothing after this stage ran; models/production/ is unchanged."])


def publish_validation(paths: Paths) -> None:
    """Markdown verdict and a link to the Data Docs (and to the newest drift report, if any)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    report = _read(paths.reports / "validation.json")
    index = (paths.reports / "validation" / "index.html").resolve()
    if report is not None:
        create_markdown_artifact(validation_markdown(report, index), key="validation",
                                 description="Great Expectations verdict on the processed splits")
    if index.is_file():
        create_link_artifact(index.as_uri(), link_text=str(index), key="validation-report",
                             description="Data Docs of the validation suite")
    drift = latest_drift_report(paths)
    if drift is not None:
        create_link_artifact(drift.resolve().as_uri(), link_text=str(drift), key="drift-report",
                             description="The newest drift report")


def publish_metrics(paths: Paths) -> None:
    """The teacher-vs-student table."""
    from prefect.artifacts import create_markdown_artifact

    metrics = _read(paths.reports / "metrics.json")
    if metrics is not None:
        create_markdown_artifact(metrics_table(metrics), key="teacher-vs-student",
                                 description="reports/metrics.json")


def publish_promotion(paths: Paths) -> dict | None:
    """The promotion decision; returns reports/promote.json."""
    from prefect.artifacts import create_markdown_artifact

    report = _read(paths.reports / "promote.json")
    if report is not None:
        registry = _read(paths.root / "models" / "registry.json")
        create_markdown_artifact(promotion_markdown(report, registry), key="promotion",
                                 description="models/registry.json")
    return report


def publish_failure(stage: str, message: str, gate: bool) -> None:
    """The failure message, where the UI shows it next to the run."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(failure_markdown(stage, message, gate), key="gate-failure" if gate else "stage-failure",
                             description=f"{stage}: {message}"[:500])


# After a stage succeeds, what it publishes.
PUBLISHERS = {"validate": publish_validation, "evaluate": publish_metrics, "promote": publish_promotion}
