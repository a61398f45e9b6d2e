"""Entry-point registries of seqvae components.

Every component kind has one entry-point group (``seqvae.encoders``, ``seqvae.decoders``, ...). The
entry-point name is the component name; built-ins are declared in seqvae's own ``pyproject.toml`` the
same way a third-party package declares its plugins.

Rules (the "Registry and plugins" section of ``docs/concepts/architecture.md``):

* Listing reads package metadata only; a component is imported on first use. This module never
  imports torch.
* A plugin that fails to import (or breaks the contract) is marked broken; every other name keeps
  working. Using a broken name raises ``PluginLoadError`` naming the package and the cause.
* Unknown names raise ``UnknownComponentError`` with a did-you-mean suggestion.
* Identical duplicates (the same package seen twice, e.g. an editable install) merge silently.
* A plugin cannot shadow a built-in: the built-in wins and a ``RegistryWarning`` is issued.
* Two plugins declaring one name: using the bare name raises ``AmbiguousComponentError`` that
  lists the ``dist:name`` aliases to choose from. Never "first on sys.path wins".
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from seqvae.component_config import ComponentConfig

__all__ = [
    "KINDS",
    "installed_plugins",
    "AmbiguousComponentError",
    "EntryInfo",
    "PluginLoadError",
    "PluginValidationError",
    "Registry",
    "RegistryError",
    "RegistryWarning",
    "UnknownComponentError",
    "get_registry",
    "normalize",
    "refresh",
]

BUILTIN_DIST = "seqvae"
AUTOLOAD_ENV = "SEQVAE_DISABLE_PLUGIN_AUTOLOAD"

#: kind -> (entry-point group, "module:attr" of the base class every entry must subclass)
KINDS: dict[str, tuple[str, str]] = {
    "encoder": ("seqvae.encoders", "seqvae.interfaces:Encoder"),
    "decoder": ("seqvae.decoders", "seqvae.interfaces:Decoder"),
    "prior": ("seqvae.priors", "seqvae.interfaces:Prior"),
    "regularizer": ("seqvae.regularizers", "seqvae.interfaces:Regularizer"),
    "schedule": ("seqvae.schedules", "seqvae.interfaces:Schedule"),
    "dataset": ("seqvae.datasets", "seqvae.interfaces:DatasetBuilder"),
    "strategy": ("seqvae.strategies", "seqvae.interfaces:Strategy"),
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")


class RegistryError(ValueError):
    """Base class of every registry error (a ``ValueError``: it is the user's input that is wrong)."""


class UnknownComponentError(RegistryError):
    """No component of this kind has that name."""

    def __init__(self, kind: str, name: str, available: list[str], suggestions: list[str]):
        self.kind, self.name, self.available, self.suggestions = kind, name, available, suggestions
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        avail = ", ".join(available) if available else "(none installed)"
        super().__init__(f"Unknown {kind} '{name}'.{hint} Available: {avail}.")


class AmbiguousComponentError(RegistryError):
    """Two plugin packages declare the same name; the user must pick one by its alias."""

    def __init__(self, kind: str, name: str, aliases: list[str]):
        self.kind, self.name, self.aliases = kind, name, aliases
        super().__init__(
            f"The {kind} name '{name}' is declared by several packages; "
            f"use one of: {', '.join(aliases)}."
        )


class PluginLoadError(RegistryError):
    """The entry point exists but importing it failed."""

    def __init__(self, kind: str, name: str, dist: str, value: str, cause: str):
        self.kind, self.name, self.dist, self.value, self.cause = kind, name, dist, value, cause
        super().__init__(
            f"The {kind} '{name}' from package '{dist}' is broken: importing '{value}' failed: {cause}"
        )


class PluginValidationError(PluginLoadError):
    """The entry point imports, but the object does not meet the component contract."""

    def __init__(self, kind: str, name: str, dist: str, value: str, cause: str):
        RegistryError.__init__(
            self, f"The {kind} '{name}' from package '{dist}' ('{value}') breaks the component contract: "
            f"{cause.removeprefix('contract: ')}"
        )
        self.kind, self.name, self.dist, self.value, self.cause = kind, name, dist, value, cause


class RegistryWarning(UserWarning):
    """A registry oddity that does not stop anything (e.g. a plugin shadowing a built-in)."""


def normalize(name: str) -> str:
    """Return the canonical form of a component name: lowercase, ``_`` written as ``-``.

    Examples:
        >>> normalize("Word_Dropout")
        'word-dropout'
    """
    return name.strip().lower().replace("_", "-")


@dataclass
class EntryInfo:
    """One declared component: where it comes from and whether it can be used."""

    kind: str
    name: str
    value: str  # "module:attr"
    dist: str
    version: str
    builtin: bool
    status: str = "ok"  # ok | broken | shadowed | ambiguous
    error: str | None = None
    obj: Any = field(default=None, repr=False, compare=False)

    @property
    def alias(self) -> str:
        """The qualified ``dist:name`` form that always refers to exactly this entry."""
        return f"{self.dist}:{self.name}"

    @property
    def provenance(self) -> str:
        """``package==version`` of the distribution that provides the entry."""
        return f"{self.dist}=={self.version}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``seqvae plugins list --json``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "value": self.value,
            "package": self.dist,
            "version": self.version,
            "builtin": self.builtin,
            "status": self.status,
            "error": self.error,
        }


def _dist_name(dist: metadata.Distribution) -> str:
    name = dist.metadata["Name"] or "unknown"
    return re.sub(r"[-_.]+", "-", name).lower()


def _missing_top_module(value: str) -> str | None:
    """The top-level module of ``value`` if it cannot be found (checked without executing code)."""
    top = value.partition(":")[0].strip().split(".")[0]
    if top in sys.modules:
        return None
    try:
        return None if importlib.util.find_spec(top) is not None else top
    except (ImportError, ValueError):
        return top


def _import_value(value: str) -> Any:
    module_name, _, attr = value.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


class Registry:
    """The components of one kind, discovered from the ``seqvae.<kind>s`` entry-point group."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"Unknown component kind '{kind}'. Kinds: {', '.join(KINDS)}.")
        self.kind = kind
        self.group, self._base_path = KINDS[kind]
        self._entries: list[EntryInfo] | None = None

    # ------------------------------------------------------------------ discovery
    def refresh(self) -> None:
        """Forget everything discovered so far; the next access re-reads the metadata."""
        self._entries = None

    def _discover(self) -> list[EntryInfo]:
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
        seen: dict[tuple[str, str, str], EntryInfo] = {}
        for dist in metadata.distributions():
            dname = _dist_name(dist)
            if not autoload and dname != BUILTIN_DIST:
                continue
            try:
                eps = [ep for ep in dist.entry_points if ep.group == self.group]
            except Exception:  # malformed entry_points.txt: nothing usable in that dist
                continue
            for ep in eps:
                name = normalize(ep.name)
                key = (dname, name, ep.value)
                if key in seen:  # identical duplicate (editable install, stray dist-info)
                    continue
                info = EntryInfo(
                    kind=self.kind,
                    name=name,
                    value=ep.value,
                    dist=dname,
                    version=dist.version or "0",
                    builtin=dname == BUILTIN_DIST,
                )
                if not _NAME_RE.match(name):
                    info.status, info.error = "broken", f"invalid name {ep.name!r} (want [a-z][a-z0-9-]*)"
                else:
                    missing = _missing_top_module(ep.value)
                    if missing:
                        info.status, info.error = "broken", f"ModuleNotFoundError: no module named '{missing}'"
                seen[key] = info
        entries = sorted(seen.values(), key=lambda e: (e.name, not e.builtin, e.dist))
        by_name: dict[str, list[EntryInfo]] = {}
        for e in entries:
            by_name.setdefault(e.name, []).append(e)
        for name, group in by_name.items():
            builtins = [e for e in group if e.builtin]
            plugins = [e for e in group if not e.builtin]
            if builtins and plugins:
                for p in plugins:
                    p.status = "shadowed"
                    warnings.warn(
                        f"Plugin {self.kind} '{p.alias}' has the same name as a built-in; "
                        f"the built-in wins. Use '{p.alias}' to pick the plugin.",
                        RegistryWarning,
                        stacklevel=3,
                    )
            elif len({p.dist for p in plugins}) > 1:
                for p in plugins:
                    if p.status == "ok":
                        p.status = "ambiguous"
        return entries

    def entries(self) -> list[EntryInfo]:
        """All declared entries of this kind (no component is imported)."""
        if self._entries is None:
            self._entries = self._discover()
        return list(self._entries)

    def names(self, include_broken: bool = False) -> list[str]:
        """Sorted names usable as bare names (without importing anything)."""
        out = {
            e.name
            for e in self.entries()
            if e.status in ("ok", "ambiguous") or (include_broken and e.status == "broken")
        }
        return sorted(out)

    # ------------------------------------------------------------------ lookup
    def resolve(self, name: str) -> EntryInfo:
        """Find the entry for ``name`` (or ``dist:name``) without importing it.

        Raises:
            UnknownComponentError: no such name (with a did-you-mean suggestion).
            AmbiguousComponentError: two plugins declare it and no alias was given.
        """
        dist, _, bare = name.rpartition(":")
        bare = normalize(bare)
        entries = self.entries()
        candidates = [e for e in entries if e.name == bare]
        if dist:
            dist_n = re.sub(r"[-_.]+", "-", dist).lower()
            candidates = [e for e in candidates if e.dist == dist_n]
        if not candidates:
            available = self.names()
            suggestions = difflib.get_close_matches(bare, available, n=3, cutoff=0.6)
            raise UnknownComponentError(self.kind, name, available, suggestions)
        builtins = [e for e in candidates if e.builtin]
        if builtins:
            return builtins[0]
        if len(candidates) > 1:
            raise AmbiguousComponentError(self.kind, bare, [e.alias for e in candidates])
        return candidates[0]

    def get(self, name: str) -> Any:
        """Import and return the component class registered as ``name``.

        Raises:
            UnknownComponentError, AmbiguousComponentError: see ``resolve``.
            PluginLoadError: importing the entry point failed, or it breaks the contract.
        """
        return self._load(self.resolve(name))

    def _load(self, entry: EntryInfo) -> Any:
        if entry.obj is not None:
            return entry.obj
        if entry.status == "broken" and entry.error is not None:
            err_cls = PluginValidationError if entry.error.startswith("contract:") else PluginLoadError
            raise err_cls(self.kind, entry.name, entry.dist, entry.value, entry.error)
        try:
            obj = _import_value(entry.value)
        except Exception as exc:  # a broken plugin must not take the others down
            entry.status, entry.error = "broken", f"{type(exc).__name__}: {exc}"
            raise PluginLoadError(self.kind, entry.name, entry.dist, entry.value, entry.error) from exc
        problem = self._contract_problem(obj)
        if problem:
            entry.status, entry.error = "broken", f"contract: {problem}"
            raise PluginValidationError(self.kind, entry.name, entry.dist, entry.value, entry.error)
        entry.obj = obj
        return obj

    def _contract_problem(self, obj: Any) -> str | None:
        base = _import_value(self._base_path)
        if not isinstance(obj, type) or not issubclass(obj, base):
            return f"{obj!r} is not a subclass of {base.__module__}.{base.__qualname__}"
        cfg = getattr(obj, "Config", None)
        if not isinstance(cfg, type) or not issubclass(cfg, ComponentConfig):
            return f"{obj.__qualname__}.Config must subclass seqvae.config.ComponentConfig"
        if cfg.model_config.get("extra") != "forbid":
            return f"{obj.__qualname__}.Config must forbid extra fields"
        return None

    def check(self) -> list[EntryInfo]:
        """Import every entry and validate it; return all entries with their final status."""
        for entry in self.entries():
            if entry.status in ("ok", "ambiguous", "shadowed"):
                try:
                    self._load(entry)
                except PluginLoadError:
                    pass
        return self.entries()

    def provenance(self, name: str) -> str:
        """``package==version`` of the package that provides ``name``."""
        return self.resolve(name).provenance

    def register(self, name: str, obj: Any, *, replace: bool = False) -> None:
        """Register a component in-process (notebooks, tests). Raises if the name is taken.

        Args:
            name: component name.
            obj: the component class; it is validated like an entry point.
            replace: allow replacing an in-process registration of the same name.
        """
        name = normalize(name)
        problem = self._contract_problem(obj)
        if problem:
            raise PluginValidationError(self.kind, name, "<in-process>", repr(obj), problem)
        entries = self.entries()
        taken = [e for e in entries if e.name == name]
        if taken and not (replace and all(e.dist == "<in-process>" for e in taken)):
            raise RegistryError(f"The {self.kind} name '{name}' is already registered by {taken[0].dist}.")
        entries = [e for e in entries if e.name != name]
        entries.append(
            EntryInfo(self.kind, name, f"{obj.__module__}:{obj.__qualname__}", "<in-process>", "0",
                      builtin=False, obj=obj)
        )
        self._entries = entries


_REGISTRIES: dict[str, Registry] = {}


def get_registry(kind: str) -> Registry:
    """The process-wide registry of ``kind`` (``encoder``, ``decoder``, ``prior``, ...)."""
    if kind not in _REGISTRIES:
        _REGISTRIES[kind] = Registry(kind)
    return _REGISTRIES[kind]


def installed_plugins() -> dict[str, str]:
    """``{package: version}`` of every installed package, other than seqvae, that registers components.

    Recorded in each run's ``result.json`` so a number can be traced to the exact plugin versions.
    """
    found: dict[str, str] = {}
    for kind in KINDS:
        for entry in get_registry(kind).entries():
            if not entry.builtin and entry.dist != "<in-process>":
                found[entry.dist] = entry.version
    return dict(sorted(found.items()))


def refresh() -> None:
    """Re-read entry points for every kind (after installing a package or editing ``sys.path``)."""
    importlib.invalidate_caches()
    for reg in _REGISTRIES.values():
        reg.refresh()
