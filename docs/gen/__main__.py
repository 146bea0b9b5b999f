"""`python -m docs.gen [--check]`: write the generated pages and blocks, or list the stale ones (exit 1)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from docs.gen import reference, results, tables
from docs.gen.common import ROOT, fill
from docs.gen_stage_deps import stage_deps_table

PAGES = {"docs/reference/configuration.md": reference.configuration_page, "docs/reference/cli.md": reference.cli_page,
         "docs/reference/layout.md": reference.layout_page, "docs/stage-deps.md": stage_deps_table, **results.PAGES}
TREC50_E6 = "reports/bench/base_teacher_trec50_minilm_e6.json"  # the MiniLM pair on trec50 with the teachers' 6 epochs
# Blocks inside hand-written files: file -> {block name: generator}.
BLOCKS = {"README.md": {"make-run": tables.make_run_line, "schedule": reference.schedule_table, "results": tables.headline,
                        "layers": reference.layers_table, "deployments": reference.deployments_table},
          "docs/how-to/prefect-ui.md": {"deployments": reference.deployments_table},
          "docs/how-to/retraining.md": {"schedule": reference.schedule_table},
          "docs/how-to/base-teacher.md": {"evidence": tables.base_teacher,
                                          "trec50-minilm-e6": lambda: tables.base_teacher_part(TREC50_E6)}}


def expected() -> dict[str, str]:
    """Every generated file's text as a fresh generation writes it, by path relative to the root."""
    out = {path: make().rstrip() + "\n" for path, make in PAGES.items()}
    for path, blocks in BLOCKS.items():
        text = (ROOT / path).read_text(encoding="utf-8")
        for name, make in blocks.items():
            text = fill(text, name, make())
        out[path] = text
    return out


def stale() -> list[str]:
    """The generated files (and image links) that differ from a fresh generation."""
    wrong = [p for p, text in expected().items()
             if not (ROOT / p).is_file() or (ROOT / p).read_text(encoding="utf-8") != text]
    for link, target in results.IMAGES.items():
        path = ROOT / link
        if not path.is_symlink() or (path.parent / os.readlink(path)).resolve() != (ROOT / target).resolve():
            wrong.append(link)
    return wrong


def write() -> None:
    """Write every generated file and image link."""
    for rel, text in expected().items():
        (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / rel).write_text(text, encoding="utf-8")
    for link, target in results.IMAGES.items():
        path = ROOT / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(os.path.relpath(ROOT / target, path.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.gen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale file")
    args = parser.parse_args(argv)
    if args.check:
        wrong = stale()
        for rel in wrong:
            print(f"stale: {rel} (run `.venv/bin/python -m docs.gen`)", file=sys.stderr)
        return 1 if wrong else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
