"""The wheel is the whole product. Built from this checkout through its sdist (as `python -m build`
does) and installed into a fresh virtual environment, then used from a folder outside any checkout,
it lists every shipped recipe, opens the sample workspace with every sample dataset, gives the
embedded model the shipped samples to pretrain on and trains with a shipped recipe and training set.

The virtual environment reuses the installed dependencies (a .pth line naming a folder of links
to this environment's site-packages) so nothing is downloaded, while the editable install of the
checkout, its finder and `studio-builtin-plugins.pth` are left out of it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import DATASETS, ROOT

pytestmark = pytest.mark.slow

DISTRIBUTION = "alignment_studio"
# What a build reads; copying them keeps build/ and *.egg-info out of the checkout.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in", "studio", "plugins", "recipes", "datasets")
BUILD_OUTPUTS = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
SHIPPED = "studio/shipped/"


def run(command: list, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    proc = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def shipped_files() -> set[str]:
    """The checkout's files the wheel must carry, relative to the folder holding recipes/ and datasets/."""
    files = {p for folder in (ROOT / "recipes", DATASETS) for p in folder.rglob("*") if p.is_file()}
    return {p.relative_to(ROOT).as_posix() for p in files
            if "__pycache__" not in p.parts and not p.name.startswith(".")}


def build_wheel(work: Path) -> Path:
    source = work / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=BUILD_OUTPUTS)
        elif path.is_file():
            shutil.copy2(path, source / name)
    # The sdist first (the PEP 517 hook of the backend pyproject.toml names), then the wheel from
    # the unpacked sdist: what the sdist forgets, the wheel misses.
    sdist = run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                 "print(build_meta.build_sdist(sys.argv[1]))", work / "sdist"], cwd=source)
    archive = work / "sdist" / sdist.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        # The "data" filter where this Python has it (it refuses links and paths leaving the folder).
        tar.extractall(work / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (work / "unpacked").iterdir()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", work / "dist", "."], cwd=unpacked)
    (wheel,) = (work / "dist").glob(f"{DISTRIBUTION}-*.whl")
    return wheel


def is_this_checkout(name: str) -> bool:
    """Site-packages entries of this project's own install (editable or not) and any .pth file."""
    return (name.startswith(("__editable__", f"{DISTRIBUTION}-", f"{DISTRIBUTION}.", "studio_"))
            or name in ("studio", "__pycache__") or name.endswith(".pth"))


def make_venv(work: Path) -> Path:
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    python = venv / "bin" / "python"
    # Links to everything installed here except this project: .pth lines add plain folders (their
    # own .pth files never run), so the editable finder and the plugins/ path stay out. The links
    # sit inside the venv because dill (datasets' hashing) pickles modules by reference only when
    # they live under sys.prefix or in a site-packages folder, as installed dependencies do.
    deps = venv / "dependencies"
    deps.mkdir()
    for site in dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")):
        for entry in Path(site).iterdir():
            if not is_this_checkout(entry.name) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    site_packages = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=work).stdout.strip()
    Path(site_packages, "reuse-installed-dependencies.pth").write_text(f"{deps}\n")
    return venv


def venv_environment(venv: Path) -> dict[str, str]:
    """This process's environment (the test's studio home included) without what would put the
    checkout on sys.path, and the venv's bin/ first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "STUDIO_WORKSPACE", "STUDIO_PLUGINS")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, venv) with the wheel installed in the venv."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(work)
    venv = make_venv(work)
    # pip itself comes through the links; it installs into the venv, the running interpreter's prefix.
    run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
         "-q", wheel], cwd=work, env=venv_environment(venv))
    return wheel, venv


@pytest.fixture
def env(installed, _isolated_home) -> dict[str, str]:
    # Read per test: conftest points STUDIO_HOME and HF_HOME at temp folders for each test.
    return venv_environment(installed[1])


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside the checkout and outside any workspace, with its own studio home."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert ROOT not in folder.parents
    return folder


def test_the_wheel_carries_recipes_samples_and_training_sets(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n[len(SHIPPED):] for n in names if n.startswith(SHIPPED)}
    expected = shipped_files()
    assert {"recipes/train-sft-lora.yaml", "recipes/README.md", "datasets/alpaca.json", "datasets/alpaca.md",
            "datasets/train/sft_chat.jsonl", "datasets/train/sft_chat.md"} <= expected
    assert shipped == expected
    data = [n for n in shipped if n.startswith("datasets/") and not n.endswith(".md")]
    archive = zipfile.ZipFile(wheel)
    cards = {n: archive.read(SHIPPED + n).decode("utf-8") for n in shipped if n.endswith(".md")}
    for name in data:
        folder, _, file = name.rpartition("/")
        # A card of its own, or a card beside it or above it that names it or the folder holding it
        # (one card may describe a test file with its few-shot file, or a folder of subject files).
        own = f"{folder}/{file.split('.')[0]}.md" in shipped
        named = any(name.startswith(card.rpartition("/")[0] + "/")
                    and name[len(card.rpartition("/")[0]) + 1:].split("/")[0] in text
                    for card, text in cards.items())
        assert own or named, f"{name} has no card in the wheel"
    # Data only: no Python among the shipped files and no top-level datasets/ package (it would
    # shadow the Hugging Face library); the tests stay in the repository.
    assert not [n for n in shipped if n.endswith(".py")]
    assert not [n for n in names if n.split("/")[0] in ("datasets", "recipes", "tests", "conftest.py")]
    assert "studio/tui/studio.tcss" in names and "studio_train_sft/__init__.py" in names


def test_the_venv_runs_the_installed_wheel_not_the_checkout(installed, env, outside):
    _, venv = installed
    code = textwrap.dedent("""
        import json, datasets, studio, studio_train_sft
        from studio import resources
        print(json.dumps({"studio": studio.__file__, "plugin": studio_train_sft.__file__,
                          "hf": datasets.load_dataset.__module__, "recipes": str(resources.recipes_dir())}))
    """)
    found = json.loads(run([venv / "bin" / "python", "-c", code], cwd=outside, env=env).stdout)
    for key in ("studio", "plugin", "recipes"):
        assert Path(found[key]).is_relative_to(venv), (key, found[key])
    assert found["hf"].startswith("datasets.")


def test_studio_recipes_ls_lists_every_shipped_recipe(installed, env, outside):
    _, venv = installed
    proc = run([venv / "bin" / "studio", "recipes", "ls", "--json"], cwd=outside,
               env={**env, "STUDIO_HOME": str(outside / "home")})
    listed = json.loads(proc.stdout)
    assert sorted(r["name"] for r in listed) == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
    assert all(r["shipped"] and Path(r["path"]).is_relative_to(venv) for r in listed)


def test_the_sample_workspace_opens_with_every_sample_dataset(installed, env, outside):
    from studio.data.workflows import default_name
    from studio.sample_workspace import sample_files

    _, venv = installed
    # What plain `studio` does outside a workspace, driven headless: the Datasets screen's rows.
    script = textwrap.dedent("""
        import asyncio, json
        from textual.widgets import DataTable
        from studio.models.embedded import collect_corpus
        from studio.sample_workspace import default_workspace
        from studio.tui.app import StudioApp

        async def main():
            app = StudioApp(default_workspace())
            async with app.run_test(size=(120, 36)) as pilot:
                table = app.screen.query_one("#dataset-table", DataTable)
                for _ in range(50):
                    if table.row_count:
                        break
                    await pilot.pause(0.1)
                names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
            return {"workspace": str(app.workspace.root), "datasets": names, "corpus": collect_corpus()[2]}

        print(json.dumps(asyncio.run(main())))
    """)
    home = outside / "home"
    found = json.loads(run([venv / "bin" / "python", "-c", script], cwd=outside,
                           env={**env, "STUDIO_HOME": str(home)}).stdout.strip().splitlines()[-1])
    samples = sample_files()
    assert len(samples) > 5
    assert Path(found["workspace"]) == home / "sample-workspace"
    assert sorted(found["datasets"]) == sorted(default_name(p) for p in samples)
    # The embedded model pretrains on the same shipped samples (not on its built-in text alone).
    assert found["corpus"]["files"] == len(samples) and found["corpus"]["records"] > 100


def test_studio_run_trains_with_a_shipped_recipe(installed, env, outside):
    _, venv = installed
    studio = venv / "bin" / "studio"
    # The session's studio home: the embedded model other tests built is reused, not rebuilt.
    run([studio, "init", "ws"], cwd=outside, env=env)
    ws = outside / "ws"
    proc = run([studio, "run", "train-sft-lora", "training.max_steps=4", "training.logging_steps=1",
                "training.save_steps=4", "training.max_length=64", "limit=32", "expect=[]", "--json"],
               cwd=ws, env=env, timeout=600)
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["status"] == "completed", result
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == ws / "runs"
    steps = [e.get("step") for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())]
    assert max(s for s in steps if isinstance(s, int)) == 4
    assert any((run_dir / "final").glob("adapter_model.*"))
    # The recipe's `datasets/train/sft_chat.jsonl` is the training set inside the installed wheel.
    dataset = Path(yaml.safe_load((run_dir / "recipe.yaml").read_text())["dataset"])
    assert dataset.is_relative_to(venv) and dataset.as_posix().endswith("studio/shipped/datasets/train/sft_chat.jsonl")
