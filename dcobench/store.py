"""The run folder: layout, atomic writes and provenance.

    OUT/run.json                      the resolved run config (rewritten only when it changes)
    OUT/loras/<train_id>/             pytorch_lora_weights.safetensors + train.json, one per
                                      training config; cells that differ only in sampling share it
    OUT/cells/<cell_id>/images/*.png  the sampled grid
    OUT/cells/<cell_id>/manifest.json what produced each image
    OUT/cells/<cell_id>/result.json   written last and atomically: its presence marks a finished cell
    OUT/loras/<train_id>/resume/      a killed training's last saved state (removed once the LoRA is final)
    OUT/.locks/                       the file locks of processes sharing the folder (`locks.py`)

Every file is written to a temporary name in the same folder and renamed into place, so a killed
run never leaves a truncated file under a final name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import DcoError

UMASK = os.umask(0)
os.umask(UMASK)

PACKAGES = ("dcobench", "torch", "diffusers", "transformers", "peft", "open_clip_torch", "timm", "accelerate", "numpy")


# What a full disk or an unwritable folder raises: a user's problem with one fix, not a bug.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full; free space (or pick another --out) and rerun the same command",
    errno.EDQUOT: "the disk quota is exhausted; free space (or pick another --out) and rerun the same command",
    errno.EROFS: "the file system is read-only; pick a writable --out",
    errno.EACCES: "permission denied; pick a writable --out or fix the folder's permissions",
    errno.EPERM: "permission denied; pick a writable --out or fix the folder's permissions",
}


# What creating an output folder can raise besides DISK_ERRORS: a parent that cannot exist.
FOLDER_ERRORS = {
    errno.ENOENT: "a parent folder cannot be created there (a virtual file system such as /proc, or a removed "
                  "mount); pick a writable --out",
    errno.ENOTDIR: "a parent of it is a file, not a folder; pick another --out",
    errno.ENAMETOOLONG: "the path is too long; pick a shorter --out",
}


@contextlib.contextmanager
def writing(path: Path):
    """Turn a full disk or an unwritable folder while writing `path` into a one-line DcoError; the
    atomic writers below have removed their temporary files by then, so nothing half-written stays."""
    try:
        yield
    except OSError as e:
        fix = DISK_ERRORS.get(e.errno) or FOLDER_ERRORS.get(e.errno)
        if fix is None:
            raise
        raise DcoError(f"{path}: cannot write ({os.strerror(e.errno)}): {fix}; finished cells are kept") from e


def check_writable(folder: Path) -> None:
    """Create `folder` and a file in it now, so an unwritable --out fails before any work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DcoError(f"{folder}: is a file, not a folder; pick another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno not in FOLDER_ERRORS:
            with writing(folder):
                raise
        raise DcoError(f"{folder}: cannot create this folder ({os.strerror(e.errno)}): {FOLDER_ERRORS[e.errno]}") from e
    with writing(folder):
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)


@contextlib.contextmanager
def atomic_folder(path: Path):
    """Yield an empty temporary folder beside `path`; if the block succeeds, the folder takes
    `path`'s place (a previous one is moved aside, then deleted), so `path` is never half-written.
    If the block fails, `path` is untouched and the temporary folder is removed."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        with writing(path):
            yield tmp
            if path.exists():
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-old-"))
                os.rename(path, old / "x")
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; results are meant to be shared
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, to_json(obj).encode())


def write_json_if_changed(path: Path, obj) -> bool:
    text = to_json(obj)
    if Path(path).is_file() and Path(path).read_text() == text:
        return False
    atomic_write_bytes(path, text.encode())
    return True


def atomic_save_image(path: Path, array) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_safetensors(path: Path, fix: str = "replace it") -> tuple[dict, dict]:
    """(tensors, metadata) of a .safetensors file; a truncated or corrupt one is a one-line error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except SafetensorError as e:
        raise DcoError(f"{path}: not a readable .safetensors file ({e}; truncated or corrupt); {fix}")


def canonical_safetensors(data: bytes) -> bytes:
    """The same .safetensors file with its metadata keys sorted. safetensors keeps the metadata in a
    Rust HashMap, whose order changes with every process, so the same tensors and metadata came out
    as different bytes in two runs. Tensor offsets count from the end of the header, so only the
    header is rewritten (padded to 8 bytes, as the format asks)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    if not meta:
        return data
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":"),
                      ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def canonicalize_safetensors(path: Path) -> None:
    """Rewrite a .safetensors file in place (atomically) with `canonical_safetensors`."""
    data = Path(path).read_bytes()
    fixed = canonical_safetensors(data)
    if fixed != data:
        atomic_write_bytes(path, fixed)


def check_safetensors(path: Path, fix: str = "replace it") -> None:
    """Read only the header (a truncated file fails there): cheap enough before every LoRA load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt"):
            pass
    except SafetensorError as e:
        raise DcoError(f"{path}: not a readable .safetensors file ({e}; truncated or corrupt); {fix}")


@functools.lru_cache(maxsize=1)
def git_hash() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance() -> dict:
    import sys

    torch = sys.modules.get("torch")  # imported by whoever trained or sampled; store.py does not need it
    return {
        "git": git_hash(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # CPU results are bit-identical only at the same thread count (reductions split differently)
        **({"torch_threads": torch.get_num_threads()} if torch is not None else {}),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def cell(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    def result_path(self, cell_id: str) -> Path:
        return self.cell(cell_id) / "result.json"

    def is_done(self, cell_id: str) -> bool:
        return self.result_path(cell_id).is_file()

    def lora(self, train_id: str) -> Path:
        return self.root / "loras" / train_id

    def results(self) -> list[dict]:
        return [read_json(p) for p in sorted((self.root / "cells").glob("*/result.json"))]
