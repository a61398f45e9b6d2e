"""The ``seqvae`` command: grids, JSON rows, exit codes, and no torch for help and listing."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from seqvae.cli import app

runner = CliRunner()
# A small synthetic corpus and a few steps: the CLI path end to end in seconds.
FAST = ["--max-steps", "8", "--iw-samples", "20", "--set", "data.dataset.n_sentences=600", "--set", "data.dataset.n_train=400",
        "--set", "data.dataset.n_valid=100", "--set", "data.batch_size=32"]


def _no_torch(args: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys; sys.argv = ['seqvae'] + %r\n"
        "from seqvae.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)\n" % args
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["plugins", "list"], ["plugins", "list", "--json"],
                                  ["--version"]])
def test_help_and_listing_do_not_import_torch(args):
    proc = _no_torch(args)
    assert "NO_TORCH" in proc.stderr, proc.stderr
    assert "TORCH_LOADED" not in proc.stderr


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"seqvae {version('seqvae')}"


def test_bench_help_shows_examples():
    res = runner.invoke(app, ["bench", "--help"])
    assert res.exit_code == 0
    assert "seqvae bench --decoder lstm --schedule sigmoid" in res.output


def test_plugins_list_json_has_every_builtin_with_package_and_status():
    res = runner.invoke(app, ["plugins", "list", "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.stdout)
    names = {(r["kind"], r["name"]) for r in rows}
    assert {("decoder", "lstm"), ("schedule", "cyclical"), ("regularizer", "free-bits"), ("dataset", "synthetic")} <= names
    assert all(r["package"] == "seqvae" and r["status"] == "ok" and r["version"] for r in rows)
    res = runner.invoke(app, ["plugins", "list", "--check", "--kind", "decoder"])
    assert res.exit_code == 0 and "lstm" in res.output


def test_misspelled_decoder_exits_2_with_suggestion(tmp_path):
    res = runner.invoke(app, ["bench", "--decoder", "lstn", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "Did you mean 'lstm'" in res.output and "Available: dilated-cnn, gru, lstm" in res.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_bad_config_file_lists_every_error_and_exits_2(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("decoder:\n  kind: lstm\n  hidden_sise: 10\nmodel:\n  latent_dim: -4\ntrain:\n  max_steps: many\n")
    res = runner.invoke(app, ["bench", "--config", str(cfg)])
    assert res.exit_code == 2
    out = res.output
    assert "3 error(s)" in out and "exp.yaml" in out
    for path in ("decoder.hidden_sise", "model.latent_dim", "train.max_steps"):
        assert path in out
    assert "Traceback" not in out


def test_malformed_yaml_exits_2_with_line(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("decoder: lstm\nmodel: {latent_dim: 3\n")
    res = runner.invoke(app, ["bench", "--config", str(cfg)])
    assert res.exit_code == 2 and "exp.yaml:" in res.output and "malformed YAML" in res.output


@pytest.mark.slow
def test_two_by_two_grid_gives_four_rows(tmp_path):
    out = tmp_path / "grid"
    res = runner.invoke(app, ["bench", "--decoder", "lstm", "--decoder", "gru", "--schedule", "sigmoid",
                              "--schedule", "cyclical", "--out", str(out), "--json", *FAST])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 4
    assert {(r["decoder"], r["schedule"]) for r in rows} == {
        ("lstm", "sigmoid"), ("lstm", "cyclical"), ("gru", "sigmoid"), ("gru", "cyclical")}
    for r in rows:
        assert {"encoder", "decoder", "prior", "schedule", "regularizers", "dataset", "seed", "metrics",
                "collapsed", "components", "run_dir"} <= set(r)
        assert set(r["metrics"]) >= {"elbo", "rec", "kl", "mi", "au", "iw_nll", "ppl_iw", "ppl_elbo", "shuffle_gap"}
        assert r["metrics"]["iw_samples"] == 20
        assert all(isinstance(r["metrics"][k], (int, float)) for k in ("elbo", "rec", "kl", "mi", "au"))
        assert isinstance(r["collapsed"], bool) and isinstance(r["regularizers"], list)
        assert r["components"][f"decoder:{r['decoder']}"] == "seqvae==0.1.0"
        assert (tmp_path / "grid").joinpath(r["run_dir"].split("/")[-1], "checkpoint.pt").exists()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["decoder"] for x in lines] == [r["decoder"] for r in rows]
    # the same folder again is refused unless --overwrite
    res = runner.invoke(app, ["bench", "--out", str(out), *FAST])
    assert res.exit_code == 2 and "--overwrite" in res.output


@pytest.mark.slow
def test_regularizer_and_seed_axes_and_table(tmp_path):
    res = runner.invoke(app, ["bench", "--regularizer", "none", "--regularizer", "word-dropout+free-bits",
                              "--seed", "1", "--seed", "2", "--out", str(tmp_path / "g"), *FAST])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("word-dropout+free-bits") == 2  # the table: 2 seeds x 2 regularizer cells
    assert "Collapse verdict: collapsed if AU == 0" in res.stdout


@pytest.mark.slow
def test_failing_cell_is_recorded_and_grid_goes_on(tmp_path, fresh_registries):
    from seqvae.components.schedules.constant import ConstantSchedule
    from seqvae.registry import get_registry

    class Explode(ConstantSchedule):
        def __call__(self, step, total_steps):
            if step >= 3:
                raise RuntimeError("deliberate failure at step 3")
            return 1.0

    get_registry("schedule").register("explode", Explode)
    res = runner.invoke(app, ["bench", "--schedule", "constant", "--schedule", "explode", "--schedule", "linear",
                              "--out", str(tmp_path / "g"), "--json", *FAST])
    assert res.exit_code == 1
    rows = json.loads(res.stdout)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "deliberate failure at step 3" in rows[1]["error"] and rows[1]["metrics"] is None
    assert all(r["metrics"]["neg_elbo"] > 0 for r in (rows[0], rows[2]))
    stored = [json.loads(x) for x in (tmp_path / "g" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in stored] == ["ok", "failed", "ok"]


def test_dry_run_validates_without_training(tmp_path):
    res = runner.invoke(app, ["bench", "--decoder", "gru", "--seed", "4", "--dry-run", "--json"])
    assert res.exit_code == 0
    cfgs = json.loads(res.stdout)
    assert cfgs[0]["decoder"]["kind"] == "gru" and cfgs[0]["train"]["seed"] == 4


def test_train_from_config_file_writes_a_run_and_refuses_to_overwrite(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "decoder: {kind: gru, z_injection: concat}\nschedule: cyclical\nregularizers: [{kind: word-dropout, rate: 0.3}]\n"
        "model: {latent_dim: 4, embed_dim: 16, hidden_size: 16}\n"
        "data: {dataset: {kind: synthetic, n_sentences: 600, n_train: 400, n_valid: 100}}\n"
        "train: {max_steps: 10, seed: 5}\n"
    )
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(run), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["decoder"] == "gru" and result["regularizers"] == ["word-dropout"] and result["seed"] == 5
    assert json.loads((run / "config.json").read_text())["regularizers"][0]["rate"] == 0.3
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(run)])
    assert res.exit_code == 2 and "already holds a finished run" in res.output


def _tiny_ptb(folder):
    """Three small files in the PTB layout (checksums off: these are not the canonical files)."""
    folder.mkdir()
    words = "the a cat dog sat ran on mat N <unk>".split()
    for split, n in (("train", 200), ("valid", 30), ("test", 40)):
        lines = [" " + " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(2 + i % 6)) + " " for i in range(n)]
        (folder / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


PTB_FAST = ["--suite", "ptb", "--set", "data.dataset.verify_checksums=false", "--set", "model.embed_dim=16",
            "--set", "model.hidden_size=16", "--set", "model.latent_dim=4", "--max-steps", "6", "--iw-samples", "5"]


def test_ptb_suite_with_data_dir_reports_the_metric_set_and_eval_reproduces_it(tmp_path):
    data = _tiny_ptb(tmp_path / "ptb")
    out = tmp_path / "bench"
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(data), "--encoder", "lstm", "--encoder", "none",
                              "--prior", "gaussian", "--prior", "none", "--out", str(out), "--json"])
    assert res.exit_code == 2 and "language-model baseline needs both" in res.output  # mixed pairs are refused
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(data), "--schedule", "sigmoid", "--out", str(out),
                              "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert set(row["metrics"]) >= {"elbo", "rec", "kl", "iw_nll", "ppl_iw", "ppl_elbo", "mi", "au", "shuffle_gap",
                                   "collapsed"}
    assert row["dataset"] == "ptb" and row["data"]["sentences"] == {"train": 200, "valid": 30, "test": 40}
    run = Path(row["run_dir"])
    assert json.loads((run / "config.json").read_text())["data"]["dataset"]["data_dir"] == str(data.resolve())
    # seqvae eval on the run folder gives the same numbers with the same K and seed
    res = runner.invoke(app, ["eval", str(run), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    for key in ("neg_elbo", "iw_nll", "kl", "mi", "au", "shuffle_gap"):
        assert again["metrics"][key] == pytest.approx(row["metrics"][key], rel=1e-6, abs=1e-9)
    assert (run / "eval-test-k5.json").exists()
    # bf16 evaluation on request: its own file, its precision recorded, within 0.05 nats of fp32
    res = runner.invoke(app, ["eval", str(run), "--precision", "bf16-mixed", "--accelerator", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    fast = json.loads(res.stdout)
    assert fast["eval_precision"] == "bf16-mixed" and again["eval_precision"] == "32-true"
    assert json.loads((run / "eval-test-k5-bf16.json").read_text())["eval_precision"] == "bf16-mixed"
    for key in ("neg_elbo", "iw_nll", "rec"):
        assert abs(fast["metrics"][key] - again["metrics"][key]) < 0.05, key
    assert fast["metrics"]["au"] == again["metrics"]["au"]
    res = runner.invoke(app, ["eval", str(run / "checkpoint.pt"), "--split", "valid", "--iw-samples", "0", "--json"])
    assert res.exit_code == 0, res.output
    valid = json.loads(res.stdout)
    assert valid["split"] == "valid" and valid["metrics"]["n_sentences"] == 30 and "iw_nll" not in valid["metrics"]
    res = runner.invoke(app, ["eval", str(run)])  # the table
    assert res.exit_code == 0 and "Collapse verdict" in res.output
    # eval.precision in the config: the same (deterministic) training, evaluated in bf16 as eval --precision does
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(data), "--schedule", "sigmoid",
                              "--out", str(tmp_path / "bench-bf16"), "--set", "eval.precision=bf16-mixed", "--json"])
    assert res.exit_code == 0, res.output
    (bf16_row,) = json.loads(res.stdout)
    assert bf16_row["eval_precision"] == "bf16-mixed" and row["eval_precision"] == "32-true"
    assert bf16_row["metrics"]["iw_nll"] == pytest.approx(fast["metrics"]["iw_nll"], abs=1e-6)
    res = runner.invoke(app, ["eval", str(Path(bf16_row["run_dir"])), "--json"])  # the run's own precision
    assert res.exit_code == 0 and json.loads(res.stdout)["eval_precision"] == "bf16-mixed"


def test_language_model_row_in_a_grid(tmp_path):
    data = _tiny_ptb(tmp_path / "ptb")
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(data), "--encoder", "none", "--prior", "none",
                              "--out", str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    m = row["metrics"]
    assert row["collapsed"] is None and m["kl"] == 0 and m["iw_nll"] == pytest.approx(m["neg_elbo"])


def test_bad_corpus_input_exits_2_before_training(tmp_path):
    data = _tiny_ptb(tmp_path / "ptb")
    (data / "ptb.valid.txt").write_bytes(b" fine line \n broken \xfe line \n")
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(data), "--out", str(out)])
    assert res.exit_code == 2
    assert "ptb.valid.txt:2: not valid UTF-8" in res.output
    assert not (out / "results.jsonl").exists()
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])
    assert res.exit_code == 2 and "ptb.train.txt: file not found" in res.output
    res = runner.invoke(app, ["bench", "--data-dir", str(data), "--out", str(out), *FAST])  # synthetic has no files
    assert res.exit_code == 2 and "data.dataset.data_dir" in res.output


def test_eval_errors_exit_2(tmp_path):
    res = runner.invoke(app, ["eval", str(tmp_path / "missing.pt")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    res = runner.invoke(app, ["eval", str(junk)])
    assert res.exit_code == 2 and "not a readable seqvae checkpoint" in res.output
    data = _tiny_ptb(tmp_path / "ptb")
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", *PTB_FAST, "--data-dir", str(data), "--out", str(out), "--json"])
    run = json.loads(res.stdout)[0]["run_dir"]
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "valid", "test"):
        (other / f"ptb.{split}.txt").write_text(" completely different words here \n")
    res = runner.invoke(app, ["eval", run, "--data-dir", str(other)])
    assert res.exit_code == 2 and "vocabulary" in res.output
    res = runner.invoke(app, ["eval", run, "--split", "dev"])
    assert res.exit_code == 2 and "--split must be" in res.output


def test_set_overrides_reach_into_the_grid_axes():
    """``--set`` applies after the axes: it can set a field of the regularizer an axis put in the cell."""
    res = runner.invoke(app, ["bench", "--regularizer", "word-dropout", "--regularizer", "word-dropout+free-bits",
                              "--set", "regularizers.0.rate=0.6", "--set", "train.max_steps=7", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    cells = json.loads(res.stdout)
    assert [c["regularizers"][0]["rate"] for c in cells] == [0.6, 0.6]
    assert cells[1]["regularizers"][1]["kind"] == "free-bits" and all(c["train"]["max_steps"] == 7 for c in cells)
    res = runner.invoke(app, ["bench", "--regularizer", "none", "--set", "regularizers.0.rate=0.6", "--dry-run"])
    assert res.exit_code == 2 and "regularizers.0.rate=0.6" in res.output  # nothing to set: said, not ignored


@pytest.mark.slow
def test_parallel_cells_give_the_same_rows_as_one_at_a_time(tmp_path):
    """``--parallel 2``: two worker processes share the cores; the rows (and numbers) are those of the serial grid."""
    grid = ["--schedule", "constant", "--schedule", "sigmoid", *FAST]
    serial = runner.invoke(app, ["bench", *grid, "--out", str(tmp_path / "s"), "--json"])
    par = runner.invoke(app, ["bench", *grid, "--parallel", "2", "--out", str(tmp_path / "p"), "--json"])
    assert serial.exit_code == 0 and par.exit_code == 0, par.output
    a, b = json.loads(serial.stdout), json.loads(par.stdout)
    assert [r["schedule"] for r in b] == ["constant", "sigmoid"]
    for x, y in zip(a, b):  # equal up to the summation order of a different thread count
        for key in ("neg_elbo", "rec", "kl", "iw_nll", "mi"):
            assert y["metrics"][key] == pytest.approx(x["metrics"][key], rel=1e-4, abs=1e-6), key
    assert len((tmp_path / "p" / "results.jsonl").read_text().splitlines()) == 2
    res = runner.invoke(app, ["bench", "--parallel", "2", "--devices", "2", "--dry-run"])
    assert res.exit_code == 2 and "--parallel" in res.output


def test_batch_size_scales_the_learning_rate_only_when_asked(tmp_path):
    """``--batch-size`` alone keeps lr; ``--scale-lr linear|sqrt`` scales it from the config's batch size."""
    def cell(*flags: str) -> dict:
        res = runner.invoke(app, ["bench", *flags, "--dry-run", "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)[0]

    base = cell()
    b, lr = base["data"]["batch_size"], base["train"]["lr"]
    plain = cell("--batch-size", str(4 * b))
    assert plain["data"]["batch_size"] == 4 * b and plain["train"]["lr"] == lr
    assert cell("--batch-size", str(4 * b), "--scale-lr", "linear")["train"]["lr"] == pytest.approx(4 * lr)
    assert cell("--batch-size", str(4 * b), "--scale-lr", "sqrt")["train"]["lr"] == pytest.approx(2 * lr)
    # --set applies last and wins over the scaled value
    assert cell("--batch-size", "64", "--scale-lr", "sqrt", "--set", "train.lr=0.01")["train"]["lr"] == 0.01
    for flags, says in ((["--scale-lr", "sqrt"], "give --batch-size too"),
                        (["--batch-size", "64", "--scale-lr", "cubic"], "linear or sqrt"),
                        (["--batch-size", "0"], "--batch-size must be >= 1")):
        res = runner.invoke(app, ["bench", *flags, "--dry-run"])
        assert res.exit_code == 2 and says in res.output, res.output
    res = runner.invoke(app, ["train", "--resume", str(tmp_path), "--batch-size", "64"])
    assert res.exit_code == 2 and "drop --config/--set/--batch-size" in res.output


def test_a_relative_data_dir_is_stored_resolved(tmp_path, monkeypatch):
    """``data_dir: data`` in a YAML (or a --set) is stored absolute, so the run folder works from anywhere."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("data: {dataset: {kind: text, data_dir: data, train: train.txt}}\n")
    for flags in (["--config", str(cfg)], ["--set", "data.dataset={kind: text, data_dir: ./data, train: t.txt}"]):
        res = runner.invoke(app, ["bench", *flags, "--dry-run", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)[0]["data"]["dataset"]["data_dir"] == str(tmp_path / "data")


def test_every_command_help_is_clean_and_every_option_explained():
    """No ``<bool>`` beside flags, no reST double backticks, and a help text for every option."""
    import typer

    root = typer.main.get_command(app)

    def commands(group, prefix=()):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from commands(cmd, (*prefix, name))
            else:
                yield (*prefix, name), cmd

    seen = checked = 0
    for path, cmd in commands(root):
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (path, res.output)
        assert "<bool>" not in res.output and "``" not in res.output, (path, res.output)
        options = [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]
        missing = [p.opts[0] for p in options if not p.help]
        assert not missing, f"{' '.join(path)}: options without help: {missing}"
        seen += 1
        checked += len(options)
    assert checked > 60  # the check saw the options (bench alone has over 30)
    assert seen == 10  # bench, train, eval, 4 generation commands, plugins list/show, config schema


def test_a_grid_gives_every_decoder_the_suites_settings():
    """``--decoder lstm --decoder gru``: the suite's decoder dropout (0.5 in and out) holds for both, not
    only for the suite's own LSTM; fields a component lacks are left out; --set still wins."""
    res = runner.invoke(app, ["bench", "--decoder", "lstm", "--decoder", "gru", "--decoder", "dilated-cnn",
                              "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    lstm, gru, cnn = (c["decoder"] for c in json.loads(res.stdout))
    assert lstm["embed_dropout"] == gru["embed_dropout"] == cnn["embed_dropout"] == 0.5
    assert lstm["output_dropout"] == gru["output_dropout"] == 0.5
    assert cnn["dropout"] == 0.0  # its own field, which the suite does not set, keeps its default
    res = runner.invoke(app, ["bench", "--decoder", "gru", "--set", "decoder.embed_dropout=0.1", "--dry-run", "--json"])
    assert json.loads(res.stdout)[0]["decoder"]["embed_dropout"] == 0.1


def test_plugins_show_says_when_a_name_has_several_kinds():
    res = runner.invoke(app, ["plugins", "show", "lstm"])
    assert res.exit_code == 0 and "'lstm' names 2 components (encoder, decoder)" in res.output
    assert "encoder lstm" in res.output and "decoder lstm" in res.output
    res = runner.invoke(app, ["plugins", "show", "lstm", "--kind", "decoder"])
    assert "names 2 components" not in res.output and "encoder lstm" not in res.output
