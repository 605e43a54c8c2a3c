"""The bad-input corpus (issue 12): every kind of bad input gets one line on stderr naming the file
or field and the fix, exit code 2, no traceback, and leaves every finished cell as it was.

Each case runs the real command line in this process (`dcobench.cli.main`) against a copy of a
finished tiny run. A full disk and a read-only folder are simulated at the system-call boundary
(the error the kernel would return); everything else is a real bad file, folder or value. Each
case's `label` is a row of the "Bad input" table in docs/running.md (a test keeps the two in step).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from dcobench.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.steps=4", "sample.steps=3", "sample.seeds=[0]", "--quiet"]
BASE = ["--methods", "dco", "--suite", "tiny", "subjects=[robot]", *FAST]


@dataclass
class Env:
    run: Path  # a copy of a finished run, per case
    work: Path  # where a case puts its bad files
    model: Path
    subject: Path

    def run_args(self, *extra) -> list[str]:
        return ["run", *BASE, "--out", str(self.run), *extra]

    def suite(self, mutate: Callable[[Path], None]) -> list[str]:
        """A suite file whose one subject is a copy of the tiny robot, changed by `mutate`."""
        subject = self.work / "subject"
        shutil.copytree(self.subject, subject)
        mutate(subject)
        path = self.work / "suite.yaml"
        path.write_text(f"name: mine\nmodel: {self.model}\nresolution: 32\nsubjects:\n  - path: {subject}\n"
                        "prompts: ['a {identifier} {class_noun} on the beach']\n")
        return ["run", "--suite", str(path), "--out", str(self.run), *FAST, "score.clip=tiny-clip",
                "score.dino=tiny-dino"]

    def config(self, text: str | bytes) -> list[str]:
        path = self.work / "run.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return self.run_args("--config", str(path))

    @property
    def lora(self) -> Path:
        return next((self.run / "loras").iterdir())


def _image(name: str, make: Callable[[], Image.Image], **save):
    return lambda d: make().save(d / name, **save)


def _truncated_jpeg(d: Path):
    Image.open(d / "00.png").convert("RGB").resize((64, 64)).save(d / "03.jpg", quality=95)
    data = (d / "03.jpg").read_bytes()
    (d / "03.jpg").write_bytes(data[: len(data) // 2])


def _animated_gif(d: Path):
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(d / "03.gif", save_all=True, append_images=frames[1:])


def _huge_png(d: Path):
    """A valid PNG header announcing 100000 x 100000 pixels (30 GB decoded) in a 60-byte file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (d / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _foreign_lora(env: Env) -> list[str]:
    """The finished LoRA's layers at twice the width: what a LoRA of a bigger base model looks like."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(env.lora / "pytorch_lora_weights.safetensors"))
    wide = {k: (v.repeat(1, 2) if k.endswith("down.weight") else v.repeat(2, 1)) for k, v in state.items()}
    (env.work / "other").mkdir()
    save_file(wide, str(env.work / "other" / "pytorch_lora_weights.safetensors"))
    return ["merge", str(env.lora), str(env.work / "other"), "--out", str(env.work / "merged")]


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_export(env: Env) -> list[str]:
    folder = env.work / "cut"
    shutil.copytree(env.lora, folder)
    _truncated(folder / "pytorch_lora_weights.safetensors")
    return ["export", str(folder), "--format", "kohya", "--out", str(env.work / "k.safetensors")]


def _truncated_lora_in_run(env: Env) -> list[str]:
    _truncated(env.lora / "pytorch_lora_weights.safetensors")
    return env.run_args("methods.dco.sweep={sample.w_con: [3.0]}")  # a new cell samples from that LoRA


def _other_protocol(env: Env) -> list[str]:
    from dcobench import regress

    baseline = env.work / "baseline.json"
    data = regress.update(env.run, baseline)
    data["protocol"]["id"] = "0123456789"
    baseline.write_text(json.dumps(data))
    return ["regress", str(env.run), "--baseline", str(baseline)]


def _dreambench_without_prompts(env: Env) -> list[str]:
    shutil.copytree(env.subject, env.work / "dreambooth" / "dataset" / "robot")
    return ["run", "--suite", "dreambench", "--data", str(env.work / "dreambooth"), "--model", str(env.model),
            "--out", str(env.run)]


def _corrupt_resume_state(env: Env) -> list[str]:
    from dcobench.plan import make_plan

    args = env.run_args("train.steps=5")
    train_id = make_plan(overrides=["subjects=[robot]", *FAST[:-1], "train.steps=5"], suite="tiny",
                         methods=["dco"]).cells[0].train_id
    state = env.run / "loras" / train_id / "resume" / "state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"\x00" * 64)
    return args


def _read_only(env: Env, monkeypatch):
    """What the kernel answers for a read-only mount: EROFS on creating anything under it."""
    def refuse(real):
        def fn(*args, dir=None, **kw):
            if dir is not None and Path(dir).resolve().is_relative_to(env.run.resolve()):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*args, dir=dir, **kw)
        return fn

    monkeypatch.setattr(tempfile, "mkstemp", refuse(tempfile.mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse(tempfile.mkdtemp))


def _disk_full_on_lora(env: Env, monkeypatch):
    """The disk fills half-way through writing the trained LoRA's .safetensors file."""
    import safetensors.torch

    def save_file(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def _disk_full_on_image(env: Env, monkeypatch):
    """The disk fills half-way through the first sampled image."""
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    def fdopen(fd, *args, **kw):
        f = real(fd, *args, **kw)
        return Full(f) if ".png." in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def _new_out(env: Env, *extra) -> list[str]:
    """`dcobench run` into a new output folder (env.work/out), which the case's patch refuses."""
    return ["run", *BASE, "--out", str(env.work / "out"), *extra]


def _refuse_mkdir(code: int):
    """Creating env.work/out fails with `code`, as the kernel answers for an unwritable parent (EACCES)."""
    def patch(env: Env, monkeypatch):
        real = Path.mkdir

        def mkdir(self, *args, **kw):
            if self.resolve() == (env.work / "out").resolve():
                raise OSError(code, os.strerror(code), str(self))
            return real(self, *args, **kw)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    return patch


def _disk_full_on_out(env: Env, monkeypatch):
    """The disk is full: the output folder's first file cannot be created (ENOSPC)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).resolve() == (env.work / "out").resolve():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _under_a_file(env: Env) -> list[str]:
    (env.work / "a-file").write_text("not a folder")
    return ["run", *BASE, "--out", str(env.work / "a-file" / "run")]


@dataclass
class Case:
    label: str  # its row in the "Bad input" table of docs/running.md
    expect: str  # in the one error line
    argv: Callable[[Env], list[str]]
    patch: Callable | None = None


CASES = [
    # reference images
    Case("truncated JPEG", "03.jpg: cannot read image", lambda e: e.suite(_truncated_jpeg)),
    Case("0-byte PNG", "03.png: cannot read image", lambda e: e.suite(lambda d: (d / "03.png").write_bytes(b""))),
    Case("CMYK image", "03.jpg: is CMYK; convert it to RGB",
         lambda e: e.suite(_image("03.jpg", lambda: Image.new("CMYK", (64, 64), (0, 90, 90, 0))))),
    Case("16-bit image", "03.png: has I;16 pixels",
         lambda e: e.suite(_image("03.png", lambda: Image.new("I;16", (64, 64), 30000)))),
    Case("1x1 image", "03.png: is 1x1 pixels", lambda e: e.suite(_image("03.png", lambda: Image.new("RGB", (1, 1))))),
    Case("animated GIF", "03.gif: is animated (3 frames)", lambda e: e.suite(_animated_gif)),
    Case("huge image", "downscale it", lambda e: e.suite(_huge_png)),
    Case("missing subject folder", "subject folder not found", lambda e: e.suite(shutil.rmtree)),
    Case("caption without the identifier", "00.txt: caption does not contain the identifier 'sks'",
         lambda e: e.suite(lambda d: (d / "00.txt").write_text("a photo of a toy"))),
    # config files and values
    Case("invalid YAML", "is not valid YAML", lambda e: e.config("train: [1, 2\n")),
    Case("YAML that is a list", "the top level must be a mapping", lambda e: e.config("- train\n- sample\n")),
    Case("YAML boolean where a string is expected", "train.mixed_precision: expected a string (got the boolean false)",
         lambda e: e.config("train:\n  mixed_precision: false\n")),
    Case("config file that is not text", "not a text file", lambda e: e.config(b"\xff\xfe\x00bad")),
    Case("missing config file", "config file not found", lambda e: e.run_args("--config", str(e.work / "none.yaml"))),
    Case("unknown config key", "train.stepz: unknown key; did you mean 'steps'?", lambda e: e.run_args("train.stepz=5")),
    Case("sweep over train.mixed_precision", "train.mixed_precision cannot be swept",
         lambda e: e.run_args("methods.dco.sweep={train.mixed_precision: [no, fp16]}")),
    Case("sweep over train.resolution", "train.resolution cannot be swept",
         lambda e: e.run_args("methods.dco.sweep={train.resolution: [32, 64]}")),
    Case("sweep knob split by a dotted override", "write methods.dco.sweep={sample.w_con: [...]}",
         lambda e: e.run_args("methods.dco.sweep.sample.w_con=[1,2]")),
    Case("sweep knob given one value", "methods.dco.sweep.sample.w_con: give a list of values",
         lambda e: e.run_args("methods.dco.sweep={sample.w_con: 2}")),
    Case("NaN", "methods.dco.beta: expected a finite number", lambda e: e.run_args("methods.dco.beta=nan")),
    Case("zero beta", "methods.dco.beta: must be > 0", lambda e: e.run_args("methods.dco.beta=0")),
    Case("negative learning rate", "train.lr: must be > 0", lambda e: e.run_args("train.lr=-1e-4")),
    Case("zero steps", "train.steps: must be > 0", lambda e: e.run_args("train.steps=0")),
    # names
    Case("unknown method", "unknown method 'dreamboth'", lambda e: ["run", "--methods", "dreamboth", "--out", str(e.run)]),
    Case("unknown suite", "unknown suite 'tinyy'", lambda e: ["run", "--suite", "tinyy", "--out", str(e.run)]),
    Case("unknown metric", "unknown metric 'clip_x'", lambda e: e.run_args("score.metrics=[dino,clip_x]")),
    Case("unknown merge method", "unknown merge method 'zipplora'", lambda e: e.run_args("--merge", "zipplora")),
    Case("DreamBench folder without prompts_and_classes.txt", "no prompts_and_classes.txt", _dreambench_without_prompts),
    # files a run reads
    Case("LoRA from another base model", "the two LoRAs were trained on different base models", _foreign_lora),
    Case("truncated safetensors file", "not a readable .safetensors file", _truncated_export),
    Case("truncated LoRA in a run folder", "not a readable .safetensors file", _truncated_lora_in_run),
    Case("unreadable resume state", "cannot resume from this state", _corrupt_resume_state),
    Case("baseline from another protocol", "protocols differ", _other_protocol),
    # the disk
    Case("read-only output folder", "the file system is read-only; pick a writable --out", lambda e: e.run_args(),
         _read_only),
    Case("unwritable output folder", "permission denied; pick a writable --out", _new_out, _refuse_mkdir(errno.EACCES)),
    Case("output folder whose parent cannot be created", "a parent folder cannot be created there",
         lambda e: ["run", *BASE, "--out", "/proc/dcobench-no-such-folder/run"]),
    Case("output folder under a file", "a parent of it is a file, not a folder", _under_a_file),
    Case("output folder that is a file", "is a file, not a folder",
         lambda e: _under_a_file(e)[:-1] + [str(e.work / "a-file")]),
    Case("disk full when creating the output folder", "the disk is full", _new_out, _disk_full_on_out),
    Case("disk full while saving a LoRA", "the disk is full", lambda e: e.run_args("train.steps=5"),
         _disk_full_on_lora),
    Case("disk full while writing images", "the disk is full",
         lambda e: e.run_args("methods.dco.sweep={sample.w_con: [3.0]}"), _disk_full_on_image),
    # sharding, executors, reports
    Case("--shard 3/2", "--shard 3/2: expected i/n with 1 <= i <= n", lambda e: e.run_args("--shard", "3/2")),
    Case("--shard without a count", "--shard 2: expected i/n", lambda e: e.run_args("--shard", "2")),
    Case("unreachable Ray cluster", "--ray-address 127.0.0.1:1", lambda e: e.run_args("train.steps=5", "--ray-address", "127.0.0.1:1")),
    Case("several run folders without --out", "several run folders need --out",
         lambda e: ["report", str(e.run), str(e.run)]),
    # studies
    Case("study with an unknown sampler", "claims.subject.samplers.euler: unknown sampler; use cfg or consistency",
         lambda e: _study(e, "samplers: {cfg: {sample.cfg_scale: [3]}, euler: {sample.w_con: [1]}}")),
    Case("study sampler sweeping sample.guidance", "'sample.guidance' cannot be swept here",
         lambda e: _study(e, "samplers: {cfg: {sample.guidance: [cfg]}, consistency: {sample.w_con: [1]}}")),
    Case("study --shard 3/2", "--shard 3/2: expected i/n with 1 <= i <= n",
         lambda e: ["study", "tiny_paper", "--out", str(e.work / "study"), "--shard", "3/2"]),
]


def _study(e: Env, claim_extra: str) -> list[str]:
    """A study file whose one frontier claim carries `claim_extra` (one YAML mapping line)."""
    path = e.work / "study.yaml"
    path.write_text("name: s\nsuite: tiny\nclaims:\n  subject:\n    kind: frontier\n    methods: [dco, dreambooth]\n"
                    f"    judges: [dino]\n    {claim_extra}\n")
    return ["study", str(path), "--out", str(e.work / "study")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_suite, dcobench_cache) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", *BASE, "--out", str(out)]) == 0
    return out


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*")
            if p.is_file() and ".locks" not in p.parts and p.name != "run.json"}


# Run in a subprocess (`python -m dcobench`), a case's patch is installed by this sitecustomize
# before the entry point runs: the same fault, at the same system call, as in this process.
SITECUSTOMIZE = """
import os
if os.environ.get("DCOBENCH_FAULT"):
    import sys
    from pathlib import Path
    sys.path.insert(0, os.environ["DCOBENCH_FAULT_TESTS"])
    import pytest
    import test_bad_input as t
    case = next(c for c in t.CASES if c.label == os.environ["DCOBENCH_FAULT"])
    env = t.Env(*(Path(os.environ["DCOBENCH_FAULT_" + k]) for k in ("RUN", "WORK", "MODEL", "SUBJECT")))
    case.patch(env, pytest.MonkeyPatch())
"""


def in_process(case: Case, env: Env, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    if case.patch:
        case.patch(env, monkeypatch)
    capsys.readouterr()
    code = main(argv)
    monkeypatch.undo()
    return code, capsys.readouterr().err


def in_subprocess(case: Case, env: Env, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """The real entry point, as a user runs it: `python -m dcobench ARGV` in a new interpreter."""
    extra = {}
    if case.patch:
        site = env.work / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        extra = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                 "DCOBENCH_FAULT": case.label, "DCOBENCH_FAULT_TESTS": str(ROOT / "tests"),
                 **{f"DCOBENCH_FAULT_{k}": str(v) for k, v in (("RUN", env.run), ("WORK", env.work),
                                                               ("MODEL", env.model), ("SUBJECT", env.subject))}}
    proc = subprocess.run([sys.executable, "-m", "dcobench", *argv], capture_output=True, text=True,
                          env={**os.environ, **extra}, timeout=600)
    return proc.returncode, proc.stderr


def check_case(case, finished, tiny_sd_path, tiny_suite, tmp_path, monkeypatch, capsys, run_it) -> None:
    if case.label == "unreachable Ray cluster" and not _has_ray():
        case = Case(case.label, "Ray is not installed", case.argv)
    env = Env(tmp_path / "run", tmp_path / "work", Path(tiny_sd_path), tiny_suite.subjects[0].root)
    shutil.copytree(finished, env.run)
    env.work.mkdir()
    argv = case.argv(env)
    before = snapshot(env.run)
    code, err = run_it(case, env, argv, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.expect in lines[0], lines[0]
    after = snapshot(env.run)
    changed = [k for k in before if k not in after or after[k] != before[k]]
    assert not changed, f"finished files touched: {changed}"
    # nothing half-written: no temporary file, no staging folder, no file that does not load
    assert not [p for p in env.run.rglob("*") if p.name.startswith(".") and ".locks" not in p.parts]
    for path in set(after) - set(before):
        assert not path.endswith(".safetensors") or _loads(env.run / path), path


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, finished, tiny_sd_path, tiny_suite, tmp_path,
                                                          monkeypatch, capsys):
    check_case(case, finished, tiny_sd_path, tiny_suite, tmp_path, monkeypatch, capsys, in_process)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_bad_input_through_the_real_entry_point(case, finished, tiny_sd_path, tiny_suite, tmp_path, monkeypatch,
                                                capsys):
    """Every corpus entry through `python -m dcobench` in a subprocess: one line, exit 2, no traceback."""
    check_case(case, finished, tiny_sd_path, tiny_suite, tmp_path, monkeypatch, capsys, in_subprocess)


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _loads(path: Path) -> bool:
    from safetensors.torch import load_file

    load_file(str(path))
    return True


def test_corpus_has_25_kinds_and_the_readme_lists_each():
    page = (ROOT / "docs" / "running.md").read_text()  # the docs page that holds the Bad input table
    section = page.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    assert len(CASES) >= 25
    missing = [c.label for c in CASES if f"| {c.label} |" not in section]
    assert not missing, f"add to the Bad input table of docs/running.md: {missing}"


def test_yaml_1_1_booleans_stay_strings(tmp_path):
    """`mixed_precision: no` is the string "no" (YAML 1.1 read it as False); a boolean field still
    takes yes / no / on / off."""
    from dcobench.plan import make_plan

    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  mixed_precision: no\n  train_token: yes\n  gradient_checkpointing: off\n")
    plan = make_plan(cfg, ["sample.steps=2"], suite="tiny")
    train = plan.cells[0].train
    assert (train.mixed_precision, train.train_token, train.gradient_checkpointing) == ("no", True, False)
    assert make_plan(overrides=["train.mixed_precision=no"], suite="tiny").cells[0].train.mixed_precision == "no"
