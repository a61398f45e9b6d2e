"""Entry-point discovery with fake ``*.dist-info`` folders on sys.path (no pip install)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from seqvae.registry import (
    AmbiguousComponentError,
    PluginLoadError,
    PluginValidationError,
    RegistryWarning,
    UnknownComponentError,
    get_registry,
    normalize,
    refresh,
)

GOOD_SCHEDULE = """
from pydantic import Field
from seqvae.config import ComponentConfig
from seqvae.interfaces import Schedule

class Half(Schedule):
    class Config(ComponentConfig):
        value: float = Field(0.5, ge=0)

    def __call__(self, step, total_steps):
        return float(self.config.value)
"""


def make_dist(root: Path, dist: str, version: str, entry_points: dict[str, dict[str, str]],
              modules: dict[str, str] | None = None) -> Path:
    """Write ``<dist>-<version>.dist-info`` (METADATA + entry_points.txt) and modules under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for mod, src in (modules or {}).items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))
    return root


@pytest.fixture
def plugin_path(tmp_path, monkeypatch, fresh_registries):
    """Returns a function that puts a fake distribution on sys.path and refreshes the registries."""

    def add(sub: str, *args, **kwargs) -> Path:
        root = make_dist(tmp_path / sub, *args, **kwargs)
        monkeypatch.syspath_prepend(str(root))
        refresh()
        return root

    return add


def test_valid_plugin_is_found_and_built(plugin_path):
    plugin_path("a", "seqvae-half", "1.2.0", {"seqvae.schedules": {"half": "seqvae_half_mod:Half"}},
                {"seqvae_half_mod": GOOD_SCHEDULE})
    reg = get_registry("schedule")
    entry = reg.resolve("half")
    assert (entry.dist, entry.version, entry.builtin, entry.status) == ("seqvae-half", "1.2.0", False, "ok")
    cls = reg.get("half")
    assert cls(cls.Config(kind="half"))(3, 10) == 0.5
    assert reg.provenance("half") == "seqvae-half==1.2.0"
    assert "half" in reg.names()


def test_import_error_marks_only_that_plugin_broken(plugin_path):
    plugin_path("a", "seqvae-bad", "0.1", {"seqvae.schedules": {"bad": "seqvae_bad_mod:Nope"}},
                {"seqvae_bad_mod": "import surely_missing_dependency_xyz\n"})
    plugin_path("b", "seqvae-half", "1.0", {"seqvae.schedules": {"half": "seqvae_half_mod:Half"}},
                {"seqvae_half_mod": GOOD_SCHEDULE})
    reg = get_registry("schedule")
    with pytest.raises(PluginLoadError) as info:
        reg.get("bad")
    msg = str(info.value)
    assert "seqvae-bad" in msg and "surely_missing_dependency_xyz" in msg
    assert reg.get("half").__name__ == "Half"  # the others keep working
    assert reg.get("sigmoid").__name__ == "SigmoidSchedule"
    statuses = {e.name: e.status for e in reg.check()}
    assert statuses["bad"] == "broken" and statuses["half"] == "ok" and statuses["linear"] == "ok"


def test_identical_duplicates_merge_silently(plugin_path):
    for sub in ("a", "b"):
        plugin_path(sub, "seqvae-half", "1.0", {"seqvae.schedules": {"half": "seqvae_half_mod:Half"}},
                    {"seqvae_half_mod": GOOD_SCHEDULE})
    reg = get_registry("schedule")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entries = [e for e in reg.entries() if e.name == "half"]
    assert len(entries) == 1
    assert reg.get("half").__name__ == "Half"


def test_two_plugins_one_name_is_ambiguous_until_qualified(plugin_path):
    plugin_path("a", "seqvae-one", "1.0", {"seqvae.schedules": {"half": "seqvae_one_mod:Half"}},
                {"seqvae_one_mod": GOOD_SCHEDULE})
    plugin_path("b", "seqvae-two", "2.0", {"seqvae.schedules": {"half": "seqvae_two_mod:Half"}},
                {"seqvae_two_mod": GOOD_SCHEDULE})
    reg = get_registry("schedule")
    with pytest.raises(AmbiguousComponentError) as info:
        reg.get("half")
    assert "seqvae-one:half" in str(info.value) and "seqvae-two:half" in str(info.value)
    assert reg.get("seqvae-two:half").__module__ == "seqvae_two_mod"
    assert reg.resolve("seqvae-one:half").version == "1.0"


def test_plugin_cannot_shadow_a_builtin(plugin_path):
    with pytest.warns(RegistryWarning, match="built-in wins"):
        plugin_path("a", "seqvae-evil", "1.0", {"seqvae.schedules": {"sigmoid": "seqvae_evil_mod:Half"}},
                    {"seqvae_evil_mod": GOOD_SCHEDULE})
        reg = get_registry("schedule")
        reg.entries()
    assert reg.get("sigmoid").__module__ == "seqvae.components.schedules.sigmoid"
    assert reg.get("seqvae-evil:sigmoid").__module__ == "seqvae_evil_mod"
    statuses = {(e.dist, e.name): e.status for e in reg.entries()}
    assert statuses[("seqvae-evil", "sigmoid")] == "shadowed"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("class Half:\n    pass\n", "not a subclass"),
        ("from seqvae.interfaces import Schedule\nclass Half(Schedule):\n"
         "    def __call__(self, step, total_steps):\n        return 0.0\n", "Config must subclass"),
        ("from pydantic import BaseModel, ConfigDict\nfrom seqvae.config import ComponentConfig\n"
         "from seqvae.interfaces import Schedule\nclass Half(Schedule):\n"
         "    class Config(ComponentConfig):\n        model_config = ConfigDict(extra='allow')\n"
         "    def __call__(self, step, total_steps):\n        return 0.0\n", "forbid extra"),
    ],
    ids=["wrong-base-class", "no-config", "config-allows-extra"],
)
def test_contract_violations_are_reported(plugin_path, source, problem):
    mod = f"seqvae_wrong_{abs(hash(problem))}"
    plugin_path("a", "seqvae-wrong", "1.0", {"seqvae.schedules": {"wrong": f"{mod}:Half"}}, {mod: source})
    reg = get_registry("schedule")
    with pytest.raises(PluginValidationError, match=problem) as info:
        reg.get("wrong")
    assert "seqvae-wrong" in str(info.value)
    assert {e.name: e.status for e in reg.entries()}["wrong"] == "broken"


def test_autoload_can_be_disabled(plugin_path, monkeypatch):
    plugin_path("a", "seqvae-half", "1.0", {"seqvae.schedules": {"half": "seqvae_half_mod:Half"}},
                {"seqvae_half_mod": GOOD_SCHEDULE})
    monkeypatch.setenv("SEQVAE_DISABLE_PLUGIN_AUTOLOAD", "1")
    refresh()
    names = get_registry("schedule").names()
    assert "half" not in names and "sigmoid" in names


@pytest.mark.parametrize(("typo", "meant"), [("lstn", "lstm"), ("gr", "gru"), ("LSTM", None)])
def test_unknown_names_suggest(typo, meant):
    reg = get_registry("decoder")
    if meant is None:  # names are case-insensitive
        assert reg.resolve(typo).name == "lstm"
        return
    with pytest.raises(UnknownComponentError) as info:
        reg.get(typo)
    msg = str(info.value)
    assert f"Did you mean '{meant}'" in msg and "Available: dilated-cnn, gru, lstm" in msg


def test_names_normalise():
    assert normalize("Word_Dropout") == "word-dropout"
    assert get_registry("regularizer").resolve("word_dropout").name == "word-dropout"


def test_in_process_registration_is_validated(fresh_registries):
    from seqvae.components.schedules.constant import ConstantSchedule

    reg = get_registry("schedule")
    with pytest.raises(Exception, match="already registered"):
        reg.register("constant", ConstantSchedule)
    with pytest.raises(PluginValidationError):
        reg.register("thing", object)
    reg.register("my-constant", ConstantSchedule)
    assert reg.get("my-constant") is ConstantSchedule


def test_plugins_list_shows_plugins_without_importing_them(tmp_path):
    """In a fresh process: a valid plugin and one whose module is missing, listed from metadata only."""
    import json
    import os
    import subprocess
    import sys

    make_dist(tmp_path, "seqvae-half", "1.2.0", {"seqvae.schedules": {"half": "seqvae_half_mod:Half"}},
              {"seqvae_half_mod": "raise RuntimeError('listing must not import me')\n"})
    make_dist(tmp_path, "seqvae-gone", "0.3", {"seqvae.decoders": {"gone": "seqvae_gone_mod.sub:Dec"}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; sys.argv=['seqvae','plugins','list','--json']\nfrom seqvae.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    assert proc.stderr.strip().endswith("False")  # torch not imported
    half = rows[("schedule", "half")]
    assert (half["package"], half["version"], half["status"]) == ("seqvae-half", "1.2.0", "ok")
    gone = rows[("decoder", "gone")]
    assert gone["status"] == "broken" and "seqvae_gone_mod" in gone["error"]
    assert rows[("decoder", "lstm")]["status"] == "ok"
