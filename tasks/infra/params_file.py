"""params.yaml edited in place, as `dvc exp run -S key=value` (and `dvc exp apply`) edit it.

The overrides are validated by the schema first (a typo fails before anything changes), only
changed keys are written, and comments and layout are kept (ruamel's round trip, DVC's own YAML
library). The Prefect flows write the UI's parameters with it, and `kdistill sweep` applies its
chosen trial with it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tasks.infra.config import load_config
from tasks.infra.storage import write_text


def _yaml():
    from ruamel.yaml import YAML  # DVC's round-trip YAML library: keeps comments and layout

    yaml = YAML()
    yaml.preserve_quotes = True
    # Write None as `null`, as params.yaml does, instead of ruamel's empty value.
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _walk(overrides: dict, prefix: str = ""):
    for key, value in overrides.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def apply_overrides(params_file: Path, overrides: dict) -> list[tuple[str, Any, Any]]:
    """Write overrides into params.yaml in place, as `dvc exp run -S` does.

    Args:
        params_file: the workspace's params.yaml.
        overrides: a nested params fragment, e.g. {"distill": {"temperature": 4.0}}.

    Returns:
        (dotted key, old value, new value) for each key whose value changed; the file is
        rewritten only when there is one.

    Raises:
        ConfigError: an unknown key or a bad value (checked before the file is touched).
    """
    load_config(params_file, overrides)
    yaml = _yaml()
    data = yaml.load(params_file.read_text())
    changes = []
    for dotted, value in _walk(overrides):
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        old = node.get(last)
        # 4 and 4.0 are the same setting (the config reads both as 4.0); True and 1 are not.
        if old != value or isinstance(old, bool) != isinstance(value, bool):
            node[last] = value
            changes.append((dotted, old, value))
    if changes:
        buffer = io.StringIO()
        yaml.dump(data, buffer)
        write_text(params_file, buffer.getvalue())
    return changes
