"""Prefect orchestration over the stage functions in `tasks` (see the Prefect issue)."""
