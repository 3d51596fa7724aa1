"""Repository conventions that keep set-up and imports honest."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import DATASETS, ROOT


def test_datasets_folder_holds_no_python():
    # A datasets/__init__.py would shadow the Hugging Face library whenever the repo root is on sys.path.
    assert not list(DATASETS.rglob("*.py"))


def test_hf_datasets_library_is_not_shadowed_from_the_repo_root():
    code = "import datasets, sys; print(datasets.load_dataset.__module__); print(datasets.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    module, path = out.splitlines()
    assert module.startswith("datasets.") and "site-packages" in path


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip().splitlines()[0].split("#")[0].strip()
                for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]
    assert commands == ["./scripts/studio.sh", "./scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\./scripts/test\.sh\s*$", ci, flags=re.M)


def test_every_sample_dataset_has_a_card():
    data = [p for p in DATASETS.iterdir() if p.is_file() and not p.name.endswith(".md")]
    assert data, "datasets/ should hold samples"
    for path in data:
        stem = path.name.split(".")[0]
        cards = [DATASETS / f"{stem}.md", DATASETS / f"{path.name}.md"]
        assert any(c.is_file() for c in cards), f"{path.name} has no card ({stem}.md)"


def test_sample_workspace_imports_every_sample_without_rejects(tmp_path):
    from studio.plugins import get_host
    from studio.sample_workspace import ensure_sample_workspace, sample_files

    ws = ensure_sample_workspace(get_host().formats(), root=tmp_path / "sample")
    names = ws.dataset_names()
    assert len(names) == len(sample_files()) > 5
    for name in names:
        head = ws.head(name)
        assert head.num_records > 0 and head.rejects == 0, name
    # A second call reuses the built workspace instead of importing again.
    again = ensure_sample_workspace(get_host().formats(), root=tmp_path / "sample")
    assert [again.head(n).id for n in again.dataset_names()] == [ws.head(n).id for n in names]


def test_resources_name_the_checkout_folders():
    from studio import resources

    assert resources.shipped_root() == ROOT
    assert (resources.recipes_dir(), resources.datasets_dir()) == (ROOT / "recipes", DATASETS)
    assert resources.training_sets_dir() == DATASETS / "train"
    assert resources.shipped_file("datasets/train/sft_chat.jsonl") == DATASETS / "train" / "sft_chat.jsonl"
    assert resources.shipped_file("datasets/train/absent.jsonl") is None


def test_resources_of_an_installed_studio_are_inside_the_package(tmp_path, monkeypatch):
    from studio import resources

    site = tmp_path / "site-packages"
    (site / "studio").mkdir(parents=True)
    (site / "datasets").mkdir()  # the Hugging Face library beside an installed studio
    monkeypatch.setattr(resources, "PACKAGE", site / "studio")
    assert resources.shipped_root() is None and resources.datasets_dir() is None
    (site / "studio" / "shipped" / "datasets" / "train").mkdir(parents=True)
    (site / "studio" / "shipped" / "recipes").mkdir()
    assert resources.shipped_root() == site / "studio" / "shipped"
    assert resources.datasets_dir() == site / "studio" / "shipped" / "datasets"
    assert resources.training_sets_dir() == site / "studio" / "shipped" / "datasets" / "train"


def test_a_recipe_copied_anywhere_still_finds_the_shipped_training_set(tmp_path, monkeypatch):
    from studio.recipes import load_recipe

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "r.yaml").write_text((ROOT / "recipes" / "train-sft-lora.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert load_recipe(folder / "r.yaml").dataset == str(DATASETS / "train" / "sft_chat.jsonl")
    # A file of the user's own, next to the recipe, wins over the shipped one.
    own = folder / "datasets" / "train" / "sft_chat.jsonl"
    own.parent.mkdir(parents=True)
    own.write_text((DATASETS / "train" / "sft_chat.jsonl").read_text())
    assert load_recipe(folder / "r.yaml").dataset == str(own)
