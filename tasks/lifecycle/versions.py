"""How a change of production is recorded in DVC (and optionally git): the registry's DVC side.

After a retraining cycle or a rollback changes production outside `dvc repro`, `record` runs
`dvc commit -f promote` (dvc.lock and the cache then hold the new production, registry and archive,
so a later `dvc repro` does not undo it), `dvc add`s the cycle's data snapshot and models, pushes to
the default remote, and optionally makes a git commit (and `model-v<N>` tag).

The registry, production and the version archive themselves are written by tasks/lifecycle/registry.py; this
module only records them, and imports nothing of the lifecycle.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from tasks.infra.storage import Paths, dvc_command

log = logging.getLogger("kd")


def run_tool(cmd: list[str], root: Path) -> tuple[bool, str]:
    """Run a command (dvc, git) in `root`: (succeeded, its output). Never raises on a failed command."""
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def record(paths: Paths, message: str, snapshots: list[Path], push: bool, git_commit: bool,
           tag: str | None = None) -> dict:
    """Record a change of production (and a cycle's snapshot folders) in DVC, and optionally git.

    Never raises: production has already changed when this runs; a failed step is logged and
    returned, with the command that would finish it by hand.
    """
    root = paths.root
    out: dict = {"dvc": False, "pushed": False, "git": None}
    if not (root / ".dvc").is_dir():
        log.warning("[record] %s is not a DVC repository: nothing recorded in DVC", root)
        return out
    (dvc,) = dvc_command()
    rel = [str(p.relative_to(root)) for p in snapshots if p.exists()]
    steps = [[dvc, "commit", "-f", "promote"]] if (root / "dvc.lock").is_file() else []
    steps += [[dvc, "add", "-q", *rel]] if rel else []
    ok_all = True
    for cmd in steps:
        ok, text = run_tool(cmd, root)
        if not ok:
            ok_all = False
            log.warning("[record] `%s` failed: %s", " ".join(cmd[1:]), text.splitlines()[-1] if text else "")
    out["dvc"] = ok_all
    if push and ok_all:
        ok, text = run_tool([dvc, "remote", "default"], root)
        if ok and text:
            ok, text = run_tool([dvc, "push", "-q"], root)
            out["pushed"] = ok
            if not ok:
                log.warning("[record] `dvc push` failed (run it by hand): %s", text.splitlines()[-1] if text else "")
    if git_commit and (root / ".git").exists():
        files = ["dvc.lock", *(f"{r}.dvc" for r in rel)]
        files += [str(p.relative_to(root)) for p in (root / "data" / "cycles" / ".gitignore",
                                                     root / "models" / "cycles" / ".gitignore") if p.is_file()]
        ok, text = run_tool(["git", "add", *[f for f in files if (root / f).exists()]], root)
        ok = ok and run_tool(["git", "commit", "-q", "-m", message], root)[0]
        if ok and tag:
            ok = run_tool(["git", "tag", "-f", tag], root)[0]
        out["git"] = ok
        if not ok:
            log.warning("[record] git commit failed; commit dvc.lock and the .dvc files by hand")
    return out
