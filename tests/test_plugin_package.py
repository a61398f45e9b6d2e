"""The separately installable plugin package ``plugins/seqvae-transformer``, installed for real with pip.

pip builds and installs it offline (``--no-index --no-build-isolation --no-deps``) into a private
folder that only the subprocesses of this test put on ``PYTHONPATH``: removing that folder from the
path is the uninstall, and a copy whose module fails to import is the broken plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "seqvae-transformer"


def _seqvae(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "seqvae.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("plugin-site")
    build = tmp_path_factory.mktemp("plugin-src") / "seqvae-transformer"
    shutil.copytree(PLUGIN, build, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
                          "--quiet", "--target", str(target), str(build)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return target


def _listing(res: subprocess.CompletedProcess) -> dict[str, dict]:
    assert res.returncode in (0, 1), res.stderr
    return {e["name"]: e for e in json.loads(res.stdout)}


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runs_in_bench(site: Path, tmp_path: Path) -> None:
    listed = _listing(_seqvae(["plugins", "list", "--kind", "decoder", "--json", "--check"], site, tmp_path))
    entry = listed["transformer"]
    assert (entry["package"], entry["version"], entry["status"]) == ("seqvae-transformer", "0.1.0", "ok")
    encoders = _listing(_seqvae(["plugins", "list", "--kind", "encoder", "--json"], site, tmp_path))
    assert encoders["transformer"]["package"] == "seqvae-transformer"
    res = _seqvae(["bench", "--decoder", "transformer", "--schedule", "sigmoid", "--max-steps", "50", "--iw-samples",
                   "5", "--out", str(tmp_path / "bench"), "--json"], site, tmp_path)
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["status"] == "ok" and row["decoder"] == "transformer"
    assert row["components"]["decoder:transformer"] == "seqvae-transformer==0.1.0"
    assert row["metrics"]["neg_elbo"] > 0


@pytest.mark.slow
def test_plugin_passes_its_own_conformance_tests(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 passed" in res.stdout


@pytest.mark.slow
def test_uninstalled_plugin_disappears_and_a_broken_one_does_not_stop_seqvae(site: Path, tmp_path: Path) -> None:
    gone = _listing(_seqvae(["plugins", "list", "--kind", "decoder", "--json"], None, tmp_path))
    assert "transformer" not in gone and {"lstm", "gru"} <= set(gone)
    broken_site = tmp_path / "broken-site"
    shutil.copytree(site, broken_site)
    (broken_site / "seqvae_transformer" / "decoder.py").write_text('raise ImportError("simulated broken plugin")\n')
    listed = _listing(_seqvae(["plugins", "list", "--kind", "decoder", "--json", "--check"], broken_site, tmp_path))
    assert listed["transformer"]["status"] == "broken" and "simulated broken plugin" in listed["transformer"]["error"]
    res = _seqvae(["bench", "--decoder", "lstm", "--max-steps", "5", "--iw-samples", "0", "--out",
                   str(tmp_path / "b2"), "--json"], broken_site, tmp_path)
    assert res.returncode == 0, res.stderr
    res = _seqvae(["bench", "--decoder", "transformer", "--max-steps", "5", "--out", str(tmp_path / "b3")],
                  broken_site, tmp_path)
    assert res.returncode == 2 and "seqvae-transformer" in res.stderr and "simulated broken plugin" in res.stderr


@pytest.mark.slow
def test_the_writing_a_plugin_guide_builds_a_working_package(tmp_path: Path) -> None:
    """The package assembled only from the guide's code blocks installs, conforms and trains."""
    import re

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "writing-a-plugin.md").read_text()
    blocks = re.findall(r"```(python|toml)\n(.*?)```", guide, flags=re.S)
    decoder = next(code for lang, code in blocks if lang == "python" and "class BagDecoder" in code)
    pyproject = next(code for lang, code in blocks if lang == "toml" and "[project]" in code)
    test = next(code for lang, code in blocks if lang == "python" and "check_component" in code)
    pkg = tmp_path / "seqvae-mydecoder"
    (pkg / "src" / "seqvae_mydecoder").mkdir(parents=True)
    (pkg / "tests").mkdir()
    (pkg / "pyproject.toml").write_text(pyproject)
    (pkg / "src" / "seqvae_mydecoder" / "__init__.py").write_text("")
    (pkg / "src" / "seqvae_mydecoder" / "decoder.py").write_text(decoder)
    (pkg / "tests" / "test_conformance.py").write_text(test)
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
                          "--quiet", "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr
    res = _seqvae(["bench", "--decoder", "bag", "--max-steps", "20", "--iw-samples", "0", "--out",
                   str(tmp_path / "b"), "--json"], site, tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["components"]["decoder:bag"] == "seqvae-mydecoder==0.1.0"
