"""What a new user meets through recipes and the CLI: a recipe's first line runs as written from
the repository root, shipped recipes go by name everywhere, a misspelt option is refused, data
files are imported with lineage, and every listing describes items the same way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DATASETS, ROOT
from studio.cli import main
from studio.config_schema import validate
from studio.plugins import KINDS, get_host
from studio.store import Workspace

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# What each kind's command takes to check a recipe without running it.
CHECK_FLAG = {"curate": "--dry-run", "generate": "--estimate", "run": "--check", "eval": "--check"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.init(tmp_path / "ws")


def test_curating_from_the_repository_root_uses_the_default_workspace(tmp_path):
    """`studio curate recipes/curate-dolly.yaml --dry-run` as the README and the recipe say it,
    from the repository root, which is no workspace."""
    env = {k: v for k, v in os.environ.items() if k != "STUDIO_WORKSPACE"}
    env["STUDIO_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "studio", "curate", "recipes/curate-dolly.yaml", "--dry-run"],
                          cwd=ROOT, env=env, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    default = tmp_path / "home" / "sample-workspace"
    assert f"using the default workspace {default}" in " ".join(proc.stderr.split())
    assert "(dry run)" in proc.stdout and "minhash_dedup" in proc.stdout
    # Rows are named by their row in the input file, as `curate removed` names them.
    assert "step 0 removed source #1: exact duplicate (duplicates source #0)" in proc.stdout


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipes_first_line_runs_as_written(path, capsys, monkeypatch):
    """The command in a shipped recipe's first line, run from the repository root with no
    workspace, in its checking form (so nothing trains or calls a model)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    words = first.lstrip("# ").split()
    assert words[0] == "studio" and words[-1] == f"recipes/{path.name}", first
    monkeypatch.chdir(ROOT)
    code, out, err = run(capsys, *words[1:], CHECK_FLAG[words[1]], "--json")
    assert code == 0, err
    plans = json.loads(f"[{out.replace('}{', '},{').replace(chr(10) + '}' + chr(10) + '{', '},{')}]")
    assert plans and all(isinstance(plan, dict) for plan in plans)  # a pipeline prints one per step


def test_curate_and_generate_take_a_shipped_recipes_name(ws, capsys):
    code, out, _ = run(capsys, "curate", "curate-dolly", "--dry-run", "--json", "-w", str(ws.root))
    assert code == 0 and json.loads(out)["dry_run"] and json.loads(out)["input"].startswith("dolly_noisy@")
    code, out, _ = run(capsys, "generate", "generate-responses", "--estimate", "--json", "-w", str(ws.root))
    assert code == 0 and json.loads(out)["status"] == "estimated"
    code, _, err = run(capsys, "curate", "curate-nothing-by-this-name", "-w", str(ws.root))
    assert code == 1 and "no recipe 'curate-nothing-by-this-name'" in err and "studio recipes ls" in err


def test_a_recipe_of_another_kind_says_which_command_runs_it(ws, capsys):
    code, _, err = run(capsys, "curate", "recipes/train-sft-lora.yaml", "-w", str(ws.root))
    assert code == 1 and "is a train recipe" in err and "studio run recipes/train-sft-lora.yaml" in err


def _dolly_recipe(tmp_path: Path, **step1) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "curate-dolly.yaml").read_text())
    data["dataset"] = str(DATASETS / "dolly_noisy.jsonl")
    data["steps"][1].update(step1)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_misspelt_curation_option_is_refused_and_nothing_is_written(ws, tmp_path, capsys):
    code, _, err = run(capsys, "curate", str(_dolly_recipe(tmp_path, treshold=0.8)), "-w", str(ws.root))
    assert code == 1
    assert "step 1 (minhash_dedup)" in err and "treshold" in err and "did you mean 'threshold'" in err
    code, _, err = run(capsys, "curate", str(_dolly_recipe(tmp_path)), "steps.1.threshhold=banana",
                       "-w", str(ws.root))
    assert code == 1 and "threshhold" in err and "did you mean 'threshold'" in err
    assert ws.dataset_names() == []  # refused before anything was imported or written


def test_every_registered_items_config_refuses_unknown_keys():
    host = get_host()
    for kind in KINDS.values():
        for name, item in host.items(kind).items():
            model = getattr(item, "config_model", None)
            if model is None:
                continue
            with pytest.raises(ValueError, match="Extra inputs are not permitted"):
                validate(model, {"no_such_option_anywhere": 1})
            if host.owner(kind, name) in {p.name for p in host.listing() if p.builtin}:
                # Built-ins also refuse them when a plugin validates its own config directly.
                assert model.model_config.get("extra") == "forbid", f"{kind} {name}: {model.__name__}"


def test_a_curation_recipe_may_name_a_data_file_which_is_imported_with_lineage(ws, tmp_path, capsys):
    recipe = _dolly_recipe(tmp_path)
    code, out, _ = run(capsys, "curate", str(recipe), "--json", "-w", str(ws.root))
    assert code == 0
    result = json.loads(out)
    stored = ws.head("dolly_noisy")
    assert result["input"] == f"dolly_noisy@{stored.id}"
    assert stored.source["path"] == str(DATASETS / "dolly_noisy.jsonl") and stored.num_records == 24
    assert set(result["splits"]) == {"train", "validation", "test"}
    # The same file again is not imported twice: the stored version already holds it.
    assert run(capsys, "curate", str(recipe), "--json", "-w", str(ws.root))[0] == 0
    assert len(ws.versions("dolly_noisy")) == 1


def test_every_listing_describes_items_with_the_same_keys(capsys):
    listings = {("data", "formats"): "format", ("curate", "ops"): "curation_op",
                ("generate", "ls"): "generator", ("train", "backends"): "backend"}
    field_keys = {"name", "type", "default", "required", "help", "choices"}
    for argv, kind in listings.items():
        code, out, _ = run(capsys, *argv, "--json")
        rows = json.loads(out)
        assert code == 0 and rows, argv
        assert {row["name"] for row in rows} == set(get_host().items(kind)), argv
        for row in rows:
            assert {"name", "title", "summary", "plugin", "fields"} <= set(row), (argv, row)
            assert all(set(field) == field_keys for field in row["fields"]), (argv, row["name"])
    backends = {row["name"]: row for row in json.loads(run(capsys, "train", "backends", "--json")[1])}
    assert backends["sft"]["data"] == "conversation" and "prompt_tuning" in backends["sft"]["adapters"]


def test_the_studios_own_commands_register_like_a_plugins(capsys):
    code, out, _ = run(capsys, "plugins", "list", "--json")
    plugins = {p["name"]: p for p in json.loads(out)}
    own = plugins["commands"]
    assert own["builtin"] and own["status"] == "ok"
    assert {"command:data", "command:run", "command:curate", "command:serve"} <= set(own["provides"])
