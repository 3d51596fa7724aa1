"""The plugin host: loads built-in and third-party plugins from one entry-point group, isolates
failures per plugin, collects what each provides and installs plugins with pip.

Environment:
  STUDIO_STRICT_PLUGINS=1   a plugin that fails to load or raises in a hook aborts (plugin CI).
  STUDIO_PLUGINS=a,b        load only these plugins (by entry-point name).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy
from pydantic import BaseModel

from studio import hookspecs

# hook name -> the kind of item it registers, as shown in `studio plugins list`
KINDS = {
    "register_formats": "format",
    "register_curation_ops": "curation_op",
    "register_generators": "generator",
    "register_backends": "backend",
    "register_evaluators": "evaluator",
    "register_commands": "command",
    "register_screens": "screen",
}


# What a kind's listing shows beside name, title, summary, plugin and fields: key -> attribute.
ITEM_EXTRAS = {
    "curation_op": {"category": "category"},
    "generator": {"seeds": "seeds", "produces": "produces", "uses_completions": "uses_completions"},
    "backend": {"data": "data_kind", "adapters": "adapter_methods"},
    "evaluator": {"uses": "uses", "default_fewshot": "default_fewshot", "primary_metric": "primary_metric"},
}


class PluginError(RuntimeError):
    pass


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None
    provides: list[str] = field(default_factory=list)
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "status": self.status,
            "error": self.error,
            "provides": self.provides,
        }


def _own_distribution() -> str:
    return "alignment-studio"


def _canonical(dist_name: str | None) -> str | None:
    """PEP 503 name: ``Alignment_Studio`` and ``alignment-studio`` are one distribution."""
    return re.sub(r"[-_.]+", "-", dist_name).lower() if dist_name else None


def _strict() -> bool:
    return os.environ.get("STUDIO_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _allowed() -> set[str] | None:
    raw = os.environ.get("STUDIO_PLUGINS", "").strip()
    return {p.strip() for p in raw.split(",") if p.strip()} if raw else None


class PluginHost:
    def __init__(self, entry_points: list[md.EntryPoint] | None = None, selection: bool = True):
        """``selection=False`` loads the given entry points whatever ``STUDIO_PLUGINS`` names (the
        CLI's own commands must load even when a user limits the plugins)."""
        self._selection = selection
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        # Specs first, so a plugin with a misspelt hook fails at register() rather than silently.
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._items: dict[str, dict[str, tuple[str, Any]]] = {kind: {} for kind in KINDS.values()}
        self._collected = False
        self._load(entry_points)

    # --- loading ---------------------------------------------------------------------------

    def _load(self, entry_points: list[md.EntryPoint] | None) -> None:
        eps = entry_points if entry_points is not None else list(md.entry_points(group=hookspecs.ENTRY_POINT_GROUP))
        allowed = _allowed() if self._selection else None
        infos = []
        for ep in eps:
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist else None
            infos.append((ep, PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist_name,
                version=dist.version if dist else None,
                builtin=_canonical(dist_name) == _own_distribution(),
            )))
        # Built-ins first, then by name: registration order decides who keeps a contested
        # name (plugin or item), and a third-party plugin must not shadow a built-in.
        for ep, info in sorted(infos, key=lambda pair: (not pair[1].builtin, pair[0].name)):
            seen = self.plugins.get(ep.name)
            if seen is not None:
                if (_canonical(seen.distribution), seen.module) == (_canonical(info.distribution), info.module):
                    continue  # the same entry point seen twice (duplicate dist-info on sys.path)
                # A different plugin under a taken name: list it as failed rather than drop it.
                key = f"{ep.name} ({info.distribution or ep.value})"
                info.name = key
                self.plugins[key] = info
                self._fail(info, PluginError(
                    f"plugin name {ep.name!r} is already taken by {seen.distribution or seen.module}; "
                    f"rename the entry point in {info.distribution or ep.value}"))
                continue
            self.plugins[ep.name] = info
            if allowed is not None and ep.name not in allowed:
                info.status = "disabled"
                continue
            try:
                module = ep.load()
                self._register(module, info)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any plugin failure is isolated
                self._fail(info, exc)

    def _register(self, plugin: object, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=info.name)
        except Exception:
            if self.pm.is_registered(plugin):  # older pluggy can leave a half-registered plugin
                self.pm.unregister(plugin)
            raise
        # pluggy validates implementations of known hooks at register(); an implementation of an
        # unknown hook (a misspelt name) would only be caught by a global check_pending().
        # Check this plugin alone, so a typo fails its own plugin instead of being ignored.
        unknown = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or []
            if not caller.has_spec()
            and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
        )
        if unknown:
            self.pm.unregister(plugin)
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {', '.join(map(repr, unknown))} (misspelt?); "
                        f"known hooks: {', '.join(sorted(KINDS))}")

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.status = "failed"
        info.error = f"{type(exc).__name__}: {exc}"
        info.provides = []
        # A failed plugin leaves the manager, so no direct pm.hook call can reach it either.
        if self.pm.has_plugin(info.name):
            self.pm.unregister(name=info.name)
        if _strict():
            raise PluginError(f"plugin {info.name!r} failed: {info.error}") from exc
        info.traceback = "".join(traceback.format_exception(exc))

    def add_plugin(self, plugin: object, name: str) -> PluginInfo:
        """Register an in-process plugin object (tests, embedding applications)."""
        if name in self.plugins:
            raise PluginError(f"plugin name {name!r} is already taken by {self.plugins[name].module}")
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__),
                          distribution=None, version=None, builtin=False)
        self.plugins[name] = info
        self._collected = False
        try:
            self._register(plugin, info)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, exc)
        return info

    # --- collecting registered items -------------------------------------------------------

    def _collect(self) -> None:
        if self._collected:
            return
        self._items = {kind: {} for kind in KINDS.values()}
        impls: dict[str, list[tuple[str, Any]]] = {}
        for hook_name, kind in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                impls.setdefault(impl.plugin_name, []).append((kind, impl))
        # Plugins in registration order (built-ins first): the first to register a name keeps it.
        for info in self.plugins.values():
            if info.status != "ok":
                continue
            info.provides = []
            info.error = None  # only duplicate notes live on an ok plugin; they are rebuilt here
            # Call each plugin's implementations on their own, so one that raises costs only
            # itself; a plugin with any failing hook contributes nothing at all.
            collected: list[tuple[str, str, Any]] = []
            try:
                for kind, impl in impls.get(info.name, []):
                    def register(item: Any, _kind=kind) -> None:
                        name = getattr(item, "name", None)
                        if not isinstance(name, str) or not name:
                            raise PluginError(f"a registered {_kind} needs a non-empty string 'name', "
                                              f"got {item!r}")
                        config = getattr(item, "config_model", None)
                        # Commands and screens are surfaces themselves; everything else needs the
                        # one schema that drives recipes, CLI options and TUI forms.
                        if _kind not in ("command", "screen") and not (
                                isinstance(config, type) and issubclass(config, BaseModel)):
                            raise PluginError(f"{_kind} {name!r} needs a pydantic 'config_model' class, "
                                              f"got {config!r}")
                        collected.append((_kind, name, item))

                    impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                self._fail(info, exc)
                continue
            notes = []
            for kind, name, item in collected:
                owner = self._items[kind].get(name)
                if owner is not None:
                    notes.append(f"{kind} {name!r} is already provided by plugin {owner[0]!r}; "
                                 f"this plugin's {kind} {name!r} is ignored")
                    continue
                self._items[kind][name] = (info.name, item)
                info.provides.append(f"{kind}:{name}")
            info.error = "; ".join(notes) or None
        self._collected = True

    def items(self, kind: str) -> dict[str, Any]:
        self._collect()
        return {name: item for name, (_, item) in self._items[kind].items()}

    def owner(self, kind: str, name: str) -> str | None:
        self._collect()
        entry = self._items[kind].get(name)
        return entry[0] if entry else None

    def formats(self) -> dict[str, Any]:
        return self.items("format")

    def describe(self, kind: str) -> list[dict[str, Any]]:
        """Every registered item of a kind, described the same way for listings (``--json``) and
        forms: name, title, summary, the plugin that provides it and its config's fields."""
        from studio.config_schema import describe

        rows = []
        for name, item in sorted(self.items(kind).items()):
            row = {"name": name, "title": getattr(item, "title", None) or name,
                   "summary": getattr(item, "summary", "") or "", "plugin": self.owner(kind, name)}
            for key, attribute in ITEM_EXTRAS.get(kind, {}).items():
                value = getattr(item, attribute, None)
                row[key] = list(value) if isinstance(value, tuple) else value
            config = getattr(item, "config_model", None)
            row["fields"] = [spec.to_dict() for spec in describe(config)] if config is not None else []
            rows.append(row)
        return rows

    def listing(self) -> list[PluginInfo]:
        self._collect()
        return list(self.plugins.values())


_host: PluginHost | None = None


def get_host() -> PluginHost:
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def loaded_host() -> PluginHost | None:
    """The host if something in this process has loaded the plugins, else None (loads nothing)."""
    return _host


def reset_host() -> None:
    """Forget the loaded plugins (after install/uninstall, and between tests)."""
    global _host
    _host = None
    # importlib.metadata caches directory listings of sys.path entries; without this a
    # distribution installed or removed in this process would stay invisible (or linger).
    importlib.invalidate_caches()


# --- installing --------------------------------------------------------------------------


def _pip(args: list[str], echo: Callable[[str], None]) -> int:
    cmd = [sys.executable, "-m", "pip", *args]
    echo("$ " + " ".join(cmd))
    # Stream line by line so the CLI and the TUI's log show pip's progress as it happens.
    with subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            echo(line.rstrip("\n"))
    return proc.returncode


def install(spec: str | list[str], echo: Callable[[str], None] = print, upgrade: bool = False) -> int:
    """pip-install a plugin into the studio's own environment (the interpreter running it).
    ``spec`` is anything pip accepts; a string is split shell-style, a list is passed as is."""
    args = ["install", "--disable-pip-version-check"]
    if upgrade:
        args.append("--upgrade")
    args.extend(shlex.split(spec) if isinstance(spec, str) else spec)
    code = _pip(args, echo)
    reset_host()
    return code


def uninstall(name: str, echo: Callable[[str], None] = print) -> int:
    """Remove a plugin by its plugin name or distribution name. Built-ins cannot be removed, and
    a name that is no plugin is refused (this must never become a general `pip uninstall`)."""
    host = get_host()
    info = host.plugins.get(name)
    if info is None:
        info = next((p for p in host.plugins.values()
                     if p.distribution and _canonical(p.distribution) == _canonical(name)), None)
    if (info is not None and info.builtin) or _canonical(name) == _own_distribution():
        raise PluginError(f"{name!r} is built into the studio and cannot be uninstalled; "
                          f"use STUDIO_PLUGINS to load a subset instead")
    if info is None:
        known = ", ".join(sorted(p.name for p in host.plugins.values() if not p.builtin)) or "none"
        raise PluginError(f"no installed plugin is called {name!r} (third-party plugins: {known})")
    if not info.distribution:
        raise PluginError(f"plugin {name!r} was not installed from a distribution; nothing to uninstall")
    dist = info.distribution
    code = _pip(["uninstall", "--yes", "--disable-pip-version-check", dist], echo)
    reset_host()
    return code
