"""Prefect orchestration over the stage functions in `tasks` (the UI, schedules, artifacts).

training.py   the training-pipeline flow: one task per stage, each run through DVC
workspace.py  the DVC workspace: params.yaml overrides, `dvc repro --single-item` with streamed logs
parameters.py the flow's typed parameters (params.yaml overrides the UI shows as a form)
reports.py    markdown artifacts built from the stages' reports
serve.py      the one list of deployments; `make serve` serves them, `--work-pool` registers them
ui.py         `make ui` / `make ui-stop`: the local Prefect server, by PID
"""
