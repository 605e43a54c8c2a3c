"""`python -m build` makes a wheel that works outside the checkout: the micro world and the
configs inside it, the micro plugin found through its entry point, no setuptools warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "runs", "build", "dist", "__pycache__", ".pytest_cache"}


def _copy_tree(dst: Path) -> Path:
    """The checkout as `python -m build` sees it, built elsewhere so the checkout stays clean."""
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    return dst


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    src = _copy_tree(tmp_path / "src")
    # --no-isolation builds with this environment's setuptools (>= 77, as pyproject.toml asks),
    # so the test needs no network; `python -m build` alone does the same in a fresh build env.
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    for bad in ("SetuptoolsDeprecationWarning", "is deprecated", "WARNING Package", "ambiguous"):
        assert bad not in log, f"setuptools warned: {bad}\n" + log[-4000:]
    wheel = next((tmp_path / "dist").glob("dcobench-*.whl"))

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # The fresh venv sees this environment's third-party packages (torch, diffusers, ...) through a
    # .pth line, written after the install so pip never sees the checkout's editable dcobench.
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DCOBENCH_MICRO")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        return subprocess.run(list(map(str, args)), capture_output=True, text=True, cwd=work, env=env, timeout=300)

    where = run(py, "-c", "import dcobench, importlib.metadata as m; print(dcobench.__file__); "
                          "print(sorted(e.value for e in m.entry_points(group='dcobench.plugins')))")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(site)) and "dcobench.micro.plugin" in where.stdout
    ls = run(env_dir / "bin" / "dcobench", "ls")
    assert ls.returncode == 0, ls.stderr
    assert "micro          The micro world" in ls.stdout and "dreambooth     baseline" in ls.stdout
    assert "  micro\n" in ls.stdout  # the plugin, loaded from the installed entry point
    config = site / "dcobench" / "configs" / "default.yaml"
    val = run(env_dir / "bin" / "dcobench", "validate", config)
    assert val.returncode == 0, val.stderr
    assert val.stdout.startswith(f"ok: {config} ->") and "on suite micro" in val.stdout
    ci = site / "dcobench" / "data" / "configs" / "micro_ci.yaml"
    assert run(env_dir / "bin" / "dcobench", "validate", ci).returncode == 0
    assert (site / "dcobench" / "data" / "micro" / "base" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
