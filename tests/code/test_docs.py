"""The docs cannot rot silently (issue 24): the site builds strictly, generated pages are current, no
page names a machine's absolute path, the deployments they name are flows/serve.py's, and every
command the getting-started page and the README show exists."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
# An absolute path on some machine: /work/..., /root/..., /home/..., /tmp/... followed by a name.
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp)/[\w.-]")
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def serve_deployments() -> list[str]:
    """The deployment names of flows/serve.py's DEPLOYMENTS, read from its source (Prefect not imported)."""
    tree = ast.parse((REPO / "flows" / "serve.py").read_text(encoding="utf-8"))
    listed = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "DEPLOYMENTS" for t in node.targets))
    return [ast.literal_eval(call.args[1]) for call in listed.elts]


def test_site_builds_strictly(tmp_path):
    """mkdocs build --strict: a broken link or anchor, a missing page or a page outside the nav fails."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                                                      "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "reference" / "configuration" / "index.html").is_file()


def test_generated_pages_are_current():
    """The committed generated pages and blocks equal a fresh generation (`make docs` rewrites them)."""
    from docs.gen.__main__ import stale

    assert stale() == [], "stale generated docs (run `.venv/bin/python -m docs.gen` and commit): " + ", ".join(stale())


def test_a_changed_result_changes_the_page(monkeypatch):
    """The headline table is read from the sweep's file, not typed: change the file, the table follows."""
    from docs.gen import tables

    real = tables.load_json

    def changed(rel):
        data = real(rel)
        if rel == "reports/sweep/trials.json":
            data["summary"]["student"]["test_accuracy"] = 0.1234
        return data

    assert "0.1234" not in tables.headline()
    monkeypatch.setattr(tables, "load_json", changed)
    assert "0.1234" in tables.headline()


def test_a_block_without_its_markers_fails():
    from docs.gen.common import fill

    assert fill("a\n<!-- gen:x:begin -->\nold\n<!-- gen:x:end -->\nb", "x", "new") == \
        "a\n<!-- gen:x:begin -->\nnew\n<!-- gen:x:end -->\nb"
    with pytest.raises(KeyError):
        fill("no markers here", "x", "new")


def test_no_absolute_machine_path_in_the_docs():
    found = [f"{page.relative_to(REPO)}:{n}: {line.strip()[:100]}" for page in PAGES
             for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1) if ABSOLUTE.search(line)]
    assert found == []


def test_absolute_paths_of_a_results_file_are_scrubbed():
    from docs.gen.common import cell

    assert not ABSOLUTE.search(cell({"root": "/tmp/fresh2", "model": "/work/main/runs/quick"}))


def test_the_configuration_reference_lists_every_key_with_its_default():
    page = (REPO / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+\.[a-z_0-9]+)` \|.*$", page, re.M)}
    missing = [f"{s}.{k}" for s, keys in params.items() for k in keys if f"{s}.{k}" not in rows]
    assert missing == []
    # the bounds column of a bounded key, and the default column, as the schema and params.yaml say
    assert "| `distill.temperature` | number | > 0 | `2.0` |" in rows["distill.temperature"]


def test_deployment_names_and_count_in_the_docs_are_serve_s():
    names = serve_deployments()
    assert len(names) >= 1
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"(\d+|" + "|".join(NUMBER_WORDS) + r")( \w+)? deployments", text, re.I):
            count = int(m.group(1)) if m.group(1).isdigit() else NUMBER_WORDS[m.group(1).lower()]
            assert count == len(names), f"{page.relative_to(REPO)}: '{m.group(0)}', flows/serve.py has {len(names)}"
        # a name used as a deployment: "Deployments → NAME", "the `NAME` deployment", "deployment `NAME`"
        used = re.findall(r"Deployments → ([\w-]+)|`([\w-]+)` deployment|deployment `([\w-]+)`", text)
        unknown = {n for group in used for n in group if n} - set(names)
        assert not unknown, f"{page.relative_to(REPO)} names deployments flows/serve.py lacks: {sorted(unknown)}"
    for page in (REPO / "README.md", REPO / "docs" / "how-to" / "prefect-ui.md"):
        text = page.read_text(encoding="utf-8")
        assert all(f"`{n}`" in text for n in names), page


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


def _subcommands() -> set[str]:
    from tasks.cli import build_parser

    parser = build_parser()
    return set(next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices)


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """Every `make ...` and `kdistill ...` invocation in a page's code: (tool, its words)."""
    code = "\n".join(re.findall(r"```.*?\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text))
    out = []
    for line in code.splitlines():
        line = line.split("#", 1)[0]
        for part in re.split(r"&&|\|\||[;|()]", line):  # each command of a shell line
            m = re.match(r"\s*(?:\S*/)?(make|kdistill)(?:\s+(.*))?$", part)  # the tool first (or .venv/bin/...)
            if m:
                out.append((m.group(1), [w for w in (m.group(2) or "").split() if w != "..."]))
    return out


@pytest.mark.parametrize("page", ["docs/getting-started.md", "README.md"])
def test_every_command_shown_exists(page):
    targets, subcommands = _makefile_targets(), _subcommands()
    takes_value = {"-S", "--set", "--root", "--params"}
    wrong = []
    commands = _commands((REPO / page).read_text(encoding="utf-8"))
    assert commands, f"{page}: no command found"
    for tool, words in commands:
        if tool == "make":
            wrong += [f"make {w}" for w in words if not w.startswith("-") and "=" not in w and w not in targets][:1]
            continue
        rest = iter(words)
        for word in rest:
            if word in takes_value:
                next(rest, None)
            elif not word.startswith("-"):
                if word not in subcommands:
                    wrong.append(f"kdistill {word}")
                break
    assert wrong == [], f"{page}: commands the Makefile / CLI lack: {wrong}"


def test_the_command_check_catches_an_unknown_command():
    commands = _commands("```\nmake runn\nkdistill -S a.b=1 distil\n```")
    assert ("make", ["runn"]) in commands and ("kdistill", ["-S", "a.b=1", "distil"]) in commands
    assert "runn" not in _makefile_targets() and "distil" not in _subcommands()


def test_the_readme_is_a_front_door():
    """At most 250 lines and 20,000 characters, and its first 120 lines show the three ways in."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250 and len(text) <= 20_000
    head = "\n".join(text.splitlines()[:120])
    for shown in ("make ui", "make serve", "Deployments → training-pipeline → Run → Custom run", "dvc repro",
                  "dvc exp run -S", "`schedule.drift_monitor`", "`retrain.on_drift`", "make run", "make test"):
        assert shown in head, f"README's first 120 lines lack {shown!r}"


def test_a_bench_stamps_its_command_machine_and_date(monkeypatch):
    """bench/_stamp.py: what the results pages print with each table, relative to the repo, no absolute path."""
    from bench._stamp import stamp
    from docs.gen.common import provenance

    monkeypatch.setattr(sys, "argv", [str(REPO / "bench" / "serving.py"), "--threads", "1"])
    report = stamp({"machine": {"cpu": "kept"}, "rows": 3})
    assert report["command"].endswith("bench/serving.py --threads 1") and str(REPO) not in report["command"]
    assert report["machine"] == {"cpu": "kept"} and report["date"].endswith("+00:00")
    assert "machine" in stamp({}) and "not recorded" not in provenance("reports/bench/x.json", stamp({}))
    assert provenance("reports/bench/x.json", {}).count("not recorded in the JSON") == 3


def test_every_repository_file_the_docs_name_exists():
    """A module moved (issue 26 moved many) leaves no page pointing at its old path."""
    named = re.compile(r"(?<![\w/.-])(?:tasks|flows|bench|tests|docs)/[\w/.-]+\.(?:py|md|png|svg|json|csv|html)\b")
    missing = sorted({f"{page.relative_to(REPO)}: {path}" for page in PAGES
                      for path in named.findall(page.read_text(encoding="utf-8"))
                      if "STAGE" not in path and "<" not in path and not (REPO / path).exists()})
    assert missing == []
