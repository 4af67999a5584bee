"""The repository stands alone: a user's clone has nothing beside it, and an installed wheel
has no checkout at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from aepo.data.benchmarks import BENCHMARKS, DEFAULT_EVAL_DIR, benchmark_path
from tests.conftest import PROJECT_ROOT

# The folder that sits beside the checkout on the machines this project was built on. Spelled
# in pieces so that this file does not name it and the scan below can cover this file too.
BESIDE = "shared"
OUTSIDE_THE_CHECKOUT = re.compile(
    r"\.\.[/\\]"
    + BESIDE
    + r"\b"  # ../<folder>
    + r"|\.parents?\b[^\n]{0,40}[\"']"
    + BESIDE
    + r"[\"']"  # root.parent / "<folder>"
)


def repository_files() -> list[str]:
    """What a commit of this checkout would hold: tracked files and new ones git does not
    ignore (``git ls-files``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if name]


def test_nothing_in_the_repository_reads_or_names_the_folder_beside_it():
    files = repository_files()
    assert "aepo/data/benchmarks.py" in files and "tests/test_standalone.py" in files
    offenders = []
    for name in files:
        path = PROJECT_ROOT / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # parquet and images
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_THE_CHECKOUT.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "reads data outside the checkout:\n" + "\n".join(offenders)


def test_the_scan_catches_both_spellings():
    assert OUTSIDE_THE_CHECKOUT.search("aepo data prepare ../" + BESIDE + "/data/train/x.parquet")
    assert OUTSIDE_THE_CHECKOUT.search('ROOT.parent / "' + BESIDE + '" / "data"')
    assert not OUTSIDE_THE_CHECKOUT.search("checkpoints go to shared storage")


def test_the_benchmarks_ship_in_the_package_and_data_eval_points_at_them():
    """One copy in git: aepo/data/eval holds the files, data/eval is a link to it."""
    package = Path(__import__("aepo").__file__).resolve().parent
    assert DEFAULT_EVAL_DIR.is_relative_to(package)
    for name in BENCHMARKS:
        assert benchmark_path(name, DEFAULT_EVAL_DIR).is_file(), name
    link = PROJECT_ROOT / "data" / "eval"
    assert link.is_symlink() and link.resolve() == DEFAULT_EVAL_DIR.resolve()
    staged = subprocess.run(
        ["git", "ls-files", "-s", "data/eval"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert staged[0] == "120000", "data/eval must stay a link, not a second copy"
    assert (PROJECT_ROOT / "data" / "train" / "dapo17k.parquet").is_file()


def copy_of_the_checkout(target: Path) -> Path:
    """The files a clone would have, links kept."""
    for name in repository_files():
        source = PROJECT_ROOT / name
        if not (source.exists() or source.is_symlink()):
            continue  # deleted in the working tree, not yet committed
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
    return target


def venv_reusing_these_packages(folder: Path) -> Path:
    """A fresh venv that imports the dependencies installed here through plain path lines: a
    path line does not run the .pth files of that folder, so the checkout's editable aepo
    is not importable there. Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # site-packages folders only: the checkout itself is never one (a venv inside it, as
    # .venv in CI, is, and must stay: it holds the dependencies)
    dependencies = [p for p in sys.path if p in ours or p.endswith("site-packages")]
    assert all(Path(p).resolve() != PROJECT_ROOT for p in dependencies)
    Path(site, "reused-dependencies.pth").write_text("\n".join(dict.fromkeys(dependencies)))
    return python


@pytest.mark.slow
def test_the_wheel_carries_the_benchmarks_and_runs_without_a_checkout(tmp_path):
    source = copy_of_the_checkout(tmp_path / "clone")
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = wheels.glob("aepo_rl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in BENCHMARKS:
        assert f"aepo/data/eval/{name}/{BENCHMARKS[name].filename}" in names, name
    assert not [n for n in names if n.endswith("dapo17k.parquet")], "DAPO-17k is repo-only"

    python = venv_reusing_these_packages(tmp_path / "venv")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    user = tmp_path / "elsewhere"
    user.mkdir()
    bin_dir = python.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=user, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    where = run(str(python), "-c", "import aepo; print(aepo.__file__)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()).resolve().is_relative_to((tmp_path / "venv").resolve())

    aepo = str(bin_dir / "aepo")
    prepared = run(aepo, "data", "prepare", "--benchmarks", "aime24", "--output", "val.parquet")
    assert prepared.returncode == 0, prepared.stdout[-2000:] + prepared.stderr[-2000:]
    assert "aime24: 30 problems from " + str((tmp_path / "venv").resolve()) in prepared.stdout
    assert len(pd.read_parquet(user / "val.parquet")) == 30

    demo = run(aepo, "demo", "--steps", "3", "--no-progress")
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "demo finished" in demo.stdout + demo.stderr
