"""benchmarks/quality/ptb.py --suite ptb-converged on a tiny PTB-layout corpus: the page's targets and
convergence table, and rows that survive a new machine through their committed small files."""

from __future__ import annotations

import json
import shutil

from tests.scripts import load_script
from tests.test_cli import _tiny_ptb


def _ptb_script():
    return load_script("benchmarks/quality/ptb.py")


def test_converged_page_checks_the_targets_and_rows_survive_through_their_artifacts(tmp_path, monkeypatch):
    ptb = _ptb_script()
    data = _tiny_ptb(tmp_path / "ptb")
    monkeypatch.setattr(ptb, "suite_config", lambda name: _no_checksums(name))
    argv = ["--suite", "ptb-converged", "--data-dir", str(data), "--rows", "lm", "constant", "--max-steps", "4",
            "--iw-samples", "2", "--out", str(tmp_path / "runs"), "--artifacts", str(tmp_path / "kept"),
            "--page", str(tmp_path / "page.md")]
    assert ptb.main(argv) == 0
    page = (tmp_path / "page.md").read_text()
    assert "- LM baseline: test NLL within 1.5 nats of 101.04 and PPL <= 104: **missed**" in page  # 4 steps
    assert "- cyclical: KL > 0 with IW-NLL within 2 nats of the LM: not run yet" in page
    assert "| lm | 32-true / 32-true | 0.0 |" in page  # 4 steps of 1,315 per epoch
    # every row of the suite is on the page; those not asked for say so
    assert "| cyclical | not run yet |" in page and "| ae-pretrain+fb | 32-true / 32-true | not run yet |" in page
    # Li et al.'s row has its own recipe over the suite's (the step cap of --max-steps holds for it too)
    assert ("Row `ae-pretrain+fb`: schedule linear (warmup_steps 13150); its own training settings: lr 0.5, "
            "lr_decay.patience 5.") in page
    assert "Row `sigmoid`: schedule sigmoid (k 0.00038, x0 13150)." in page  # sigmoid(epoch / 2 - 5)
    # the explanation run says what it tests and with which recipe, and is not a row the best-recipe target waits for
    assert "Row `cyclical-fu` is an explanation run: it tests why the cyclical row collapses" in page
    assert "its own training settings: optimizer adam, lr 0.001, lr_decay none, lr_cosine_period 13,150." in page
    best = next(line for line in page.splitlines() if line.startswith("- the best recipe"))
    assert "sigmoid" in best and "cyclical-fu" not in best
    assert "- explanation `cyclical-fu` (why `cyclical` collapses: its recipe, not its schedule): not run yet" in page
    # the collapse record: validation KL per epoch for the VAE rows, none for the LM
    kl_table = page.split("Validation KL after each epoch")[1].split("\n\n")[1].splitlines()
    assert kl_table[0] == "| row | epoch 1 |" and [x.split(" | ")[0] for x in kl_table[2:]] == ["| constant"]
    kl = float(kl_table[2].split(" | ")[1].rstrip(" |"))
    csv_kl = [line.split(",") for line in (tmp_path / "runs" / "constant" / "logs" / "metrics.csv").read_text().splitlines()]
    assert abs(kl - float(csv_kl[-1][csv_kl[0].index("val/kl")])) < 5e-4
    kept = sorted(str(p.relative_to(tmp_path / "kept")) for p in (tmp_path / "kept").rglob("*") if p.is_file())
    assert kept == sorted(f"{row}/{f}" for row in ("constant", "lm")
                          for f in ("config.json", "logs/metrics.csv", "result.json", "trained.json"))
    first = json.loads((tmp_path / "kept" / "lm" / "result.json").read_text())
    assert first["validation"]["validations"][-1]["step"] == 4  # the final validation of a short run
    # a new machine: no run folders, only the committed files; nothing is trained again
    shutil.rmtree(tmp_path / "runs")
    import seqvae.training

    monkeypatch.setattr(seqvae.training, "run_experiment", _must_not_train)
    assert ptb.main(argv) == 0
    assert (tmp_path / "page.md").read_text() == page


def _no_checksums(name: str) -> dict:
    from seqvae.bench.suites import suite_config

    raw = suite_config(name)
    raw["data"]["dataset"]["verify_checksums"] = False
    return raw


def _script_with(tmp_path, monkeypatch, section: str, **settings):
    """The script and a tiny PTB corpus, with the suite's ``section`` changed by ``settings``."""
    ptb = _ptb_script()

    def changed(name: str) -> dict:
        raw = _no_checksums(name)
        raw[section].update(settings)
        return raw

    monkeypatch.setattr(ptb, "suite_config", changed)
    return ptb, _tiny_ptb(tmp_path / "ptb")


def _must_not_train(*args, **kwargs):
    raise AssertionError("a row with committed artifacts was trained again")


def test_the_threads_column_names_each_part_of_a_row_resumed_with_other_threads():
    ptb = _ptb_script()
    assert ptb.threads_text({"threads": 2}) == "2"  # a row from before sessions were recorded
    one = {"threads": 1, "sessions": [{"threads": 1, "steps": 500, "seconds": 9.0},
                                      {"threads": 1, "steps": 700, "seconds": 12.0}]}
    assert ptb.threads_text(one) == "1"
    mixed = {"threads": 1, "sessions": [{"threads": None, "steps": 38892, "seconds": 5000.0},
                                        {"threads": 1, "steps": 20000, "seconds": 3000.0},
                                        {"threads": 2, "steps": 0, "seconds": 0.5}]}  # a part that took no step
    assert ptb.threads_text(mixed) == "? (38,892 steps), 1 (20,000 steps)"


def test_eval_precision_evaluates_finished_rows_again_and_keeps_the_earlier_result(tmp_path, monkeypatch):
    """--eval-precision bf16-mixed after an fp32 run: no training, a bf16 evaluation, the fp32 one listed."""
    ptb = _ptb_script()
    data = _tiny_ptb(tmp_path / "ptb")
    monkeypatch.setattr(ptb, "suite_config", lambda name: _no_checksums(name))
    argv = ["--suite", "ptb-converged", "--data-dir", str(data), "--rows", "constant", "--max-steps", "4",
            "--iw-samples", "2", "--out", str(tmp_path / "runs"), "--page", str(tmp_path / "page.md")]
    assert ptb.main(argv) == 0
    fp32 = json.loads((tmp_path / "runs" / "constant" / "result.json").read_text())
    import seqvae.training.run

    monkeypatch.setattr(seqvae.training.run, "_train", _must_not_train)
    assert ptb.main([*argv, "--eval-precision", "bf16-mixed"]) == 0
    page = (tmp_path / "page.md").read_text()
    assert "--eval-precision bf16-mixed" in page and "| constant | 32-true / bf16-mixed | 0.0 |" in page
    bf16 = json.loads((tmp_path / "runs" / "constant" / "result.json").read_text())
    assert bf16["eval_precision"] == "bf16-mixed" and bf16["train_seconds"] == fp32["train_seconds"]
    kept = json.loads((tmp_path / "runs" / "constant" / "eval-test-k2.json").read_text())
    assert kept["eval_precision"] == "32-true" and kept["metrics"] == fp32["metrics"]
    assert f"| constant | test | 2 | 32-true | {fp32['metrics']['iw_nll']:.2f} |" in page
    assert abs(bf16["metrics"]["iw_nll"] - fp32["metrics"]["iw_nll"]) < 0.05


def test_page_only_trains_nothing_and_says_how_far_an_interrupted_row_got(tmp_path, monkeypatch):
    ptb, data = _script_with(tmp_path, monkeypatch, "train", checkpoint_every=5)
    import seqvae.training as T

    original = T.ResumeCheckpoint.on_train_batch_end

    def cut_at_12(self, trainer, module, *args):
        original(self, trainer, module, *args)
        if trainer.global_step == 12:
            raise RuntimeError("cut")

    monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", cut_at_12)
    page = tmp_path / "page.md"
    argv = ["--suite", "ptb-converged", "--data-dir", str(data), "--max-steps", "20", "--iw-samples", "2",
            "--out", str(tmp_path / "runs"), "--page", str(page)]
    ptb.main([*argv, "--rows", "constant"])  # the row stops at step 12; its state of step 10 is saved
    assert (tmp_path / "runs" / "constant" / "resume.ckpt").exists()
    monkeypatch.setattr(T, "run_experiment", _must_not_train)
    monkeypatch.setattr(ptb, "run_grid", _must_not_train)
    assert ptb.main([*argv, "--page-only"]) == 0
    text = page.read_text()
    assert "| constant | in progress: epoch 0.0 (step 10), 0.0 h of training so far |" in text
    assert "| lm | not run yet |" in text
    assert "- constant beta collapses (KL < 0.1, AU 0): in progress" in text
    # the convergence table: its epochs so far and the threads of each part
    import torch

    (line,) = [x for x in text.splitlines() if x.startswith("| constant | 32-true / 32-true | 0.0 so far |")]
    assert line.startswith("| constant | 32-true / 32-true | 0.0 so far | - | - | | in progress |")
    assert line.endswith(f"| {torch.get_num_threads()} |")  # one part, this process's threads


def test_an_explanation_run_is_judged_against_the_row_it_explains():
    ptb = _ptb_script()

    def metrics(kl, au=0):
        return {"kl": kl, "au": au, "iw_nll": 101.0}

    line = ptb.explanation_line("cyclical-fu", "cyclical", metrics(1.2, 5), metrics(0.001), "ok")
    assert "**supported**: KL 1.200, AU 5" in line and "`cyclical`'s KL 0.001" in line
    line = ptb.explanation_line("cyclical-fu", "cyclical", metrics(0.02), metrics(0.001), "ok")
    assert "**not supported** (both collapse)" in line
    assert "nothing to explain" in ptb.explanation_line("cyclical-fu", "cyclical", metrics(0.02), metrics(0.5), "ok")
    assert ptb.explanation_line("cyclical-fu", "cyclical", None, metrics(0.001), "in progress").endswith("in progress")
    assert ptb.explanation_line("cyclical-fu", "cyclical", None, None, None).endswith("not run yet")


def test_an_ae_pretrain_row_in_progress_names_its_phase():
    ptb = _ptb_script()
    assert ptb._phase_text({"strategy_state": {}}) == "in progress"
    assert ptb._phase_text({"strategy_state": {"switched_at": None}}).startswith("in progress: autoencoder phase")
    assert ptb._phase_text({"strategy_state": {"switched_at": 40 * 1315}}) == "in progress: VAE phase since epoch 40"


def test_a_trained_row_whose_evaluation_was_cut_shows_as_evaluating(tmp_path, monkeypatch):
    """A row that finished training but not its test evaluation (hours of IW-NLL at K = 500) is neither
    "not run yet" nor "in progress" on the page: it shows its training and how far the evaluation got."""
    ptb, data = _script_with(tmp_path, monkeypatch, "data", eval_batch_size=2)
    import seqvae.metrics as M

    original = M._save_partial

    def cut_after_two_batches(path, key, acc):
        original(path, key, acc)
        if acc["done"] == 2:
            raise KeyboardInterrupt("cut")  # not an error a grid records: the process stops here

    monkeypatch.setattr(M, "_save_partial", cut_after_two_batches)
    page = tmp_path / "page.md"
    argv = ["--suite", "ptb-converged", "--data-dir", str(data), "--max-steps", "4", "--iw-samples", "2",
            "--out", str(tmp_path / "runs"), "--page", str(page)]
    try:
        ptb.main([*argv, "--rows", "constant"])
    except KeyboardInterrupt:
        pass
    run = tmp_path / "runs" / "constant"
    assert (run / "trained.json").exists() and not (run / "result.json").exists()
    import seqvae.training as T

    monkeypatch.setattr(T, "run_experiment", _must_not_train)
    monkeypatch.setattr(ptb, "run_grid", _must_not_train)
    assert ptb.main([*argv, "--page-only"]) == 0
    text = page.read_text()
    (row,) = [x for x in text.splitlines() if x.startswith("| constant | trained (")]
    total = -(-sum(1 for line in (data / "ptb.test.txt").read_text().splitlines() if line.strip()) // 2)
    assert row.startswith(f"| constant | trained (0.0 epochs, 0.0 h); evaluating: 2 of {total} test batches done |")
    assert "- constant beta collapses (KL < 0.1, AU 0): in progress" in text
    (line,) = [x for x in text.splitlines() if x.startswith("| constant | 32-true / 32-true |")]
    assert "budget (4 steps)" in line and "not run yet" not in line  # its training, as for a finished row


def test_an_ae_pretrain_row_in_progress_shows_its_best_as_its_recipe_judges_it(tmp_path):
    """The autoencoder phase is judged on the reconstruction (its -ELBO carries a growing, unpenalised KL,
    so the smallest -ELBO is an early epoch, not the best one); the VAE phase on its own passes' -ELBO."""
    ptb = _ptb_script()
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = ["epoch,step,val/kl,val/neg_elbo",
            "0,1314,30.0,150.0",   # reconstruction 120: the smallest -ELBO, not the best reconstruction
            "1,2629,60.0,160.0",   # reconstruction 100
            "2,3944,90.0,185.0"]   # reconstruction 95: the autoencoder's best
    (logs / "metrics.before-resume.csv").write_text("\n".join(rows[:3]) + "\n")
    (logs / "metrics.csv").write_text("\n".join([rows[0], rows[3]]) + "\n")
    row = {"run_dir": str(tmp_path), "status": "in progress", "strategy_state": {"switched_at": None}}
    assert ptb._best_so_far(row) == (3945, "95.00 (reconstruction)")
    # after the switch at step 3945 only the VAE phase's passes count, on their -ELBO
    (logs / "metrics.csv").write_text("\n".join([rows[0], rows[3], "3,5259,5.0,110.0", "4,6574,6.0,108.0",
                                                 "5,7889,6.5,109.0"]) + "\n")
    row["strategy_state"] = {"switched_at": 3945}
    assert ptb._best_so_far(row) == (6575, "108.00")
    # a row without phases: the smallest -ELBO
    assert ptb._best_so_far({"run_dir": str(tmp_path), "status": "in progress", "strategy_state": {}}) == (6575, "108.00")


def test_a_seqvae_eval_record_under_the_new_settings_is_reused_not_evaluated_again(tmp_path, monkeypatch):
    """`seqvae eval RUN --precision bf16-mixed` first, then the page under --eval-precision bf16-mixed: the
    row takes that record as its result (no training, no evaluation), keeps the fp32 one, and both travel
    with the committed artifacts. A record older than the checkpoint (an earlier training's) is not used."""
    from typer.testing import CliRunner

    import seqvae.training.run
    from seqvae.cli import app

    ptb = _ptb_script()
    data = _tiny_ptb(tmp_path / "ptb")
    monkeypatch.setattr(ptb, "suite_config", lambda name: _no_checksums(name))
    argv = ["--suite", "ptb-converged", "--data-dir", str(data), "--rows", "constant", "--max-steps", "4",
            "--iw-samples", "2", "--out", str(tmp_path / "runs"), "--page", str(tmp_path / "page.md"),
            "--artifacts", str(tmp_path / "kept")]
    assert ptb.main(argv) == 0
    run = tmp_path / "runs" / "constant"
    fp32 = json.loads((run / "result.json").read_text())
    res = CliRunner().invoke(app, ["eval", str(run), "--precision", "bf16-mixed", "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    recorded = json.loads((run / "eval-test-k2-bf16.json").read_text())

    monkeypatch.setattr(seqvae.training.run, "_train", _must_not_train)
    monkeypatch.setattr(seqvae.training.run, "evaluate_run", _must_not_evaluate)
    assert ptb.main([*argv, "--eval-precision", "bf16-mixed"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["eval_precision"] == "bf16-mixed" and result["eval_reused"] == "eval-test-k2-bf16.json"
    assert result["metrics"] == recorded["metrics"] and result["eval_seconds"] == recorded["eval_seconds"]
    kept = tmp_path / "kept" / "constant"
    assert json.loads((kept / "eval-test-k2.json").read_text())["metrics"] == fp32["metrics"]  # the fp32 result too
    page = (tmp_path / "page.md").read_text()
    assert f"| constant | test | 2 | 32-true | {fp32['metrics']['iw_nll']:.2f} |" in page
    assert "| constant | test | 2 | bf16-mixed |" not in page  # the row's own result is not listed again
    d = recorded["metrics"]["iw_nll"] - fp32["metrics"]["iw_nll"]
    assert f"bf16 - fp32 evaluation of the same checkpoint, same split and K (nats per sentence): constant IW-NLL {d:+.3f}" in page

    # a record older than the checkpoint belongs to an earlier training: evaluated again
    import os

    from seqvae.run_dir import RunDir

    st = (run / "checkpoint.pt").stat()
    os.utime(run / "eval-test-k2-bf16.json", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    assert RunDir(run).recorded_evaluation("test", 2, "bf16-mixed") is None
    assert RunDir(run).recorded_evaluation("test", 2, "32-true") is not None  # kept after the checkpoint
    assert RunDir(run).recorded_evaluation("test", 3, "32-true") is None  # no record under K = 3


def _must_not_evaluate(*args, **kwargs):
    raise AssertionError("a recorded evaluation under the same settings was computed again")
