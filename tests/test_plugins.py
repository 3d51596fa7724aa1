"""The plugin host in-process: failure isolation, hook validation, name conflicts, built-ins
loaded through the entry-point group, STUDIO_PLUGINS / STUDIO_STRICT_PLUGINS, install/uninstall
guards. CLI-level checks are in test_plugins_cli.py, the third-party package in
test_plugins_chatml.py."""
from __future__ import annotations

import importlib.metadata as md
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import pytest

from studio import plugins
from studio.data.format_kit import DatasetFormat, Match, Written
from studio.hookspecs import ENTRY_POINT_GROUP, hookimpl
from studio.plugins import PluginError, PluginHost
from studio.records import Record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("STUDIO_PLUGINS", raising=False)
    monkeypatch.delenv("STUDIO_STRICT_PLUGINS", raising=False)
    plugins.reset_host()
    yield
    plugins.reset_host()


# --- small plugins -------------------------------------------------------------------------


class FakeFormat(DatasetFormat):
    title = "Fake"
    summary = "rows with a 'fake' key"

    def __init__(self, name: str, owner: str = ""):
        super().__init__()
        self.name = name
        self.owner = owner

    def match(self, rows):
        return Match(1.0, "fake") if rows and "fake" in rows[0] else None

    def read(self, row):
        return Record([])

    def write(self, record):
        return Written({"fake": True})


def format_plugin(*names: str, owner: str = "") -> types.SimpleNamespace:
    @hookimpl
    def register_formats(register):
        for name in names:
            register(FakeFormat(name, owner))

    return types.SimpleNamespace(register_formats=register_formats)


def raising_plugin(message: str = "hook exploded") -> types.SimpleNamespace:
    @hookimpl
    def register_formats(register):
        raise RuntimeError(message)

    return types.SimpleNamespace(register_formats=register_formats)


def empty_host() -> PluginHost:
    return PluginHost(entry_points=[])


def by_name(host: PluginHost) -> dict[str, plugins.PluginInfo]:
    return {p.name: p for p in host.listing()}


def make_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str]) -> None:
    """A minimal installed distribution on a sys.path entry: dist-info + entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


def entry_points_in(site: Path) -> list[md.EntryPoint]:
    return [ep for dist in md.distributions(path=[str(site)]) for ep in dist.entry_points
            if ep.group == ENTRY_POINT_GROUP]


FORMAT_MODULE = """
from studio.hookspecs import hookimpl
from studio.data.format_kit import DatasetFormat, Match, Written
from studio.records import Record

class F(DatasetFormat):
    name = {fmt!r}
    title = summary = "from {module}"
    def match(self, rows): return None
    def read(self, row): return Record([])
    def write(self, record): return Written(None)

@hookimpl
def register_formats(register):
    register(F())
"""


# --- a hook that raises -----------------------------------------------------------------------


def test_hook_that_raises_is_isolated_and_marked_failed():
    host = empty_host()
    host.add_plugin(format_plugin("good_a"), "a_good")
    host.add_plugin(raising_plugin("hook exploded"), "b_bad")
    host.add_plugin(format_plugin("good_c"), "c_good")
    listing = by_name(host)
    assert listing["b_bad"].status == "failed"
    assert listing["b_bad"].error == "RuntimeError: hook exploded"
    assert "hook exploded" in listing["b_bad"].traceback
    assert listing["b_bad"].provides == []
    assert (listing["a_good"].status, listing["a_good"].provides) == ("ok", ["format:good_a"])
    assert (listing["c_good"].status, listing["c_good"].provides) == ("ok", ["format:good_c"])
    assert sorted(host.formats()) == ["good_a", "good_c"]
    # The failed plugin is gone from the manager: a direct hook call cannot reach it either.
    assert not host.pm.has_plugin("b_bad")
    host.pm.hook.register_formats(register=lambda item: None)


def test_plugin_failing_in_a_later_hook_contributes_nothing():
    @hookimpl
    def register_commands(register):
        raise ValueError("bad command")

    half = format_plugin("half_format")
    half.register_commands = register_commands
    host = empty_host()
    host.add_plugin(half, "half")
    info = by_name(host)["half"]
    assert info.status == "failed" and "bad command" in info.error
    assert "half_format" not in host.formats()


def test_registered_item_without_a_name_fails_its_plugin():
    @hookimpl
    def register_formats(register):
        register(object())

    host = empty_host()
    host.add_plugin(types.SimpleNamespace(register_formats=register_formats), "nameless")
    info = by_name(host)["nameless"]
    assert info.status == "failed"
    assert "needs a non-empty string 'name'" in info.error


def test_strict_mode_makes_a_raising_hook_fatal(monkeypatch):
    monkeypatch.setenv("STUDIO_STRICT_PLUGINS", "1")
    host = empty_host()
    host.add_plugin(raising_plugin("strictly broken"), "bad")
    with pytest.raises(PluginError, match=r"plugin 'bad' failed: RuntimeError: strictly broken"):
        host.formats()


# --- registration-time validation -----------------------------------------------------------


def test_misspelt_hook_name_fails_at_registration():
    @hookimpl
    def register_format(register):  # missing "s"
        register(FakeFormat("never"))

    host = empty_host()
    info = host.add_plugin(types.SimpleNamespace(register_format=register_format), "typo")
    assert info.status == "failed"  # at add_plugin, before anything is collected
    assert "unknown hook 'register_format'" in info.error
    assert "register_formats" in info.error  # the message lists the known hooks
    assert not host.pm.has_plugin("typo")
    assert "never" not in host.formats()
    # and pluggy's global check has nothing pending left behind
    host.pm.check_pending()


def test_wrong_hook_arguments_fail_at_registration():
    @hookimpl
    def register_formats(registrar):
        registrar(FakeFormat("never"))

    host = empty_host()
    info = host.add_plugin(types.SimpleNamespace(register_formats=register_formats), "badargs")
    assert info.status == "failed"
    assert info.error.startswith("PluginValidationError")
    assert "registrar" in info.error
    assert "never" not in host.formats()


def test_optional_unknown_hook_is_allowed():
    @hookimpl(optionalhook=True)
    def register_future_things(register):
        pass

    plugin = format_plugin("present")
    plugin.register_future_things = register_future_things
    host = empty_host()
    assert host.add_plugin(plugin, "forward_compatible").status == "ok"
    assert "present" in host.formats()


def test_add_plugin_refuses_a_taken_name():
    host = empty_host()
    host.add_plugin(format_plugin("x"), "same")
    with pytest.raises(PluginError, match="already taken"):
        host.add_plugin(format_plugin("y"), "same")
    assert by_name(host)["same"].provides == ["format:x"]


# --- duplicate item names --------------------------------------------------------------------


def test_duplicate_format_first_plugin_wins_second_is_told():
    host = empty_host()
    host.add_plugin(format_plugin("dup", "alpha", owner="first"), "first")
    host.add_plugin(format_plugin("dup", "beta", owner="second"), "second")
    listing = by_name(host)
    assert host.formats()["dup"].owner == "first"
    assert host.owner("format", "dup") == "first"
    assert listing["first"].provides == ["format:dup", "format:alpha"]
    assert listing["first"].error is None
    second = listing["second"]
    assert second.status == "ok"  # its other format still works
    assert second.provides == ["format:beta"]
    assert second.error == ("format 'dup' is already provided by plugin 'first'; "
                            "this plugin's format 'dup' is ignored")
    # Collecting again (a plugin added later) rebuilds the note instead of repeating it.
    host.add_plugin(format_plugin("gamma"), "third")
    assert by_name(host)["second"].error.count("already provided") == 1


def test_builtin_keeps_its_format_name_against_a_third_party_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_distribution(site, "alignment-studio", "9.9", {"zz_builtin": "fake_builtin_mod"},
                      {"fake_builtin_mod": FORMAT_MODULE.format(fmt="shared", module="builtin")})
    make_distribution(site, "aaa-third-party", "1.0", {"aa_third": "fake_third_mod"},
                      {"fake_third_mod": FORMAT_MODULE.format(fmt="shared", module="third")})
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost(entry_points=entry_points_in(site))
    listing = by_name(host)
    assert listing["zz_builtin"].builtin and not listing["aa_third"].builtin
    # "aa_third" sorts first by name, yet the built-in registers first and keeps the name.
    assert host.owner("format", "shared") == "zz_builtin"
    assert "already provided by plugin 'zz_builtin'" in listing["aa_third"].error


def test_plugin_name_taken_by_another_distribution_is_listed_as_failed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_distribution(site, "alignment-studio", "9.9", {"samename": "fake_builtin_mod2"},
                      {"fake_builtin_mod2": FORMAT_MODULE.format(fmt="b", module="builtin")})
    make_distribution(site, "impostor", "1.0", {"samename": "fake_impostor_mod"},
                      {"fake_impostor_mod": FORMAT_MODULE.format(fmt="i", module="impostor")})
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost(entry_points=entry_points_in(site))
    listing = by_name(host)
    assert listing["samename"].distribution == "alignment-studio"
    assert listing["samename"].provides == ["format:b"]
    clash = listing["samename (impostor)"]
    assert clash.status == "failed"
    assert "plugin name 'samename' is already taken by alignment-studio" in clash.error
    assert "i" not in host.formats()


def test_import_errors_and_sys_exit_at_import_are_isolated(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_distribution(site, "bad-plugins", "1.0",
                      {"exits": "fake_exits_mod", "raises": "fake_raises_mod", "fine": "fake_fine_mod"},
                      {"fake_exits_mod": "import sys\nsys.exit('plugin called exit')\n",
                       "fake_raises_mod": "import not_a_module_anywhere_xyz\n",
                       "fake_fine_mod": FORMAT_MODULE.format(fmt="fine_format", module="fine")})
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost(entry_points=entry_points_in(site))
    listing = by_name(host)
    assert listing["exits"].status == "failed"
    assert listing["exits"].error == "SystemExit: plugin called exit"
    assert listing["raises"].status == "failed"
    assert "not_a_module_anywhere_xyz" in listing["raises"].error
    assert (listing["fine"].status, listing["fine"].version, listing["fine"].distribution) == ("ok", "1.0", "bad-plugins")
    assert list(host.formats()) == ["fine_format"]


# --- STUDIO_PLUGINS ---------------------------------------------------------------------------


def test_studio_plugins_limits_what_loads(monkeypatch):
    monkeypatch.setenv("STUDIO_PLUGINS", " alpaca ,")
    host = PluginHost()
    listing = by_name(host)
    assert listing["alpaca"].status == "ok"
    others = [p for p in listing.values() if p.name != "alpaca"]
    assert others, "expected more built-in plugins than alpaca"
    assert {p.status for p in others} == {"disabled"}
    assert all(p.provides == [] for p in others)
    assert list(host.formats()) == ["alpaca"]


# --- built-ins come through the entry-point group ---------------------------------------------


def builtin_packages() -> set[str]:
    """plugins/studio_* packages that implement a hook (shared helper packages register nothing)."""
    return {p.name for p in (ROOT / "plugins").iterdir()
            if p.is_dir() and p.name.startswith("studio_") and (p / "__init__.py").is_file()
            and any("@hookimpl" in f.read_text(encoding="utf-8") for f in p.rglob("*.py"))}


def test_pyproject_registers_every_builtin_plugin_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    packages = builtin_packages()
    assert packages, "plugins/ holds no studio_* package"
    assert not (ROOT / "plugins" / "__init__.py").exists()
    assert packages - set(declared.values()) == set(), "plugin packages without an entry point"
    assert set(declared.values()) - packages == set(), "entry points naming no plugins/ package"


def test_installed_metadata_and_listing_carry_every_builtin():
    dist = md.distribution("alignment-studio")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP}
    assert builtin_packages() <= set(installed.values()), (
        "the installed metadata is stale: re-install the studio (pip install -e .)")
    listing = by_name(PluginHost())
    for name, module in installed.items():
        info = listing[name]
        assert (info.module, info.builtin, info.distribution) == (module, True, "alignment-studio")
        assert info.status == "ok", f"built-in plugin {name} failed to load: {info.error}"
        assert info.provides, f"built-in plugin {name} provides nothing"


def test_no_builtin_is_registered_outside_the_entry_point_group():
    # The host holds only what entry points (or add_plugin) gave it: no hidden default list.
    host = PluginHost(entry_points=[])
    assert host.listing() == []
    assert host.formats() == {}


# --- install / uninstall guards -----------------------------------------------------------------


@pytest.fixture
def pip_calls(monkeypatch):
    calls: list[list[str]] = []

    def fake_pip(args, echo):
        calls.append(args)
        return 0

    monkeypatch.setattr(plugins, "_pip", fake_pip)
    return calls


@pytest.mark.parametrize("name", ["alpaca", "alignment-studio", "Alignment_Studio"])
def test_uninstall_of_a_builtin_is_refused(name, pip_calls):
    with pytest.raises(PluginError, match="is built into the studio and cannot be uninstalled; "
                                          "use STUDIO_PLUGINS"):
        plugins.uninstall(name, echo=lambda line: None)
    assert pip_calls == []


def test_uninstall_of_something_that_is_no_plugin_is_refused(pip_calls):
    with pytest.raises(PluginError, match="no installed plugin is called 'torch'"):
        plugins.uninstall("torch", echo=lambda line: None)
    assert pip_calls == []


def test_uninstall_by_plugin_or_distribution_name(tmp_path, monkeypatch, pip_calls):
    site = tmp_path / "site"
    make_distribution(site, "studio-thing", "1.0", {"thing": "fake_thing_mod"},
                      {"fake_thing_mod": FORMAT_MODULE.format(fmt="thing", module="thing")})
    monkeypatch.syspath_prepend(str(site))
    plugins._host = PluginHost(entry_points=entry_points_in(site))
    plugins.uninstall("thing", echo=lambda line: None)
    plugins._host = PluginHost(entry_points=entry_points_in(site))
    plugins.uninstall("studio_thing", echo=lambda line: None)
    assert pip_calls == [["uninstall", "--yes", "--disable-pip-version-check", "studio-thing"]] * 2
    assert plugins._host is None  # the host is reloaded after pip ran


def test_install_passes_the_spec_to_pip_and_resets_the_host(pip_calls):
    plugins.get_host()
    assert plugins.install("'./my plugin' --pre", echo=lambda line: None, upgrade=True) == 0
    assert pip_calls[-1] == ["install", "--disable-pip-version-check", "--upgrade", "./my plugin", "--pre"]
    assert plugins._host is None
    plugins.install(["./other dir"], echo=lambda line: None)
    assert pip_calls[-1] == ["install", "--disable-pip-version-check", "./other dir"]


def test_pip_runs_with_the_studios_own_interpreter_and_streams_its_output():
    lines: list[str] = []
    assert plugins._pip(["--version"], lines.append) == 0
    assert lines[0] == f"$ {sys.executable} -m pip --version"
    # pip names the site-packages it belongs to: the studio's own environment.
    assert lines[1].startswith("pip ") and sys.prefix in lines[1]


def test_reset_host_sees_a_distribution_installed_meanwhile(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert "late" not in by_name(plugins.get_host())
    make_distribution(site, "studio-late", "2.0", {"late": "fake_late_mod"},
                      {"fake_late_mod": FORMAT_MODULE.format(fmt="late_format", module="late")})
    plugins.reset_host()  # what install() does after pip ran
    late = by_name(plugins.get_host())["late"]
    assert (late.status, late.version, late.provides) == ("ok", "2.0", ["format:late_format"])


def test_an_item_without_a_pydantic_config_model_fails_its_plugin():
    from studio.hookspecs import hookimpl
    from studio.plugins import PluginHost

    class NoSchema:
        name = "schemaless"
        config_model = dict

    class Plugin:
        @hookimpl
        def register_formats(self, register):
            register(NoSchema())

    host = PluginHost(entry_points=[])
    host.add_plugin(Plugin(), "noschema")
    assert "schemaless" not in host.formats()
    info = host.plugins["noschema"]
    assert info.status == "failed" and "config_model" in info.error
