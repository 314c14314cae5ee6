"""What a newcomer sees from the trainer: progress from the first update, a summary with the next command, a clear
word when a finished run is relaunched, epoch checkpoints without optimizer state, and a resume that survives a
truncated checkpoint_last.pt."""

from __future__ import annotations

import logging

import pytest
import torch

from biogpt_train.train import progress
from test_trainer_helpers import make_lm_data, read_metrics, run_in_process, tiny_overrides

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("data"), n_train=30)  # 5-6 updates per epoch


def test_progress_from_the_first_update_summary_and_rerun(tmp_path, small_data, caplog):
    run_dir = tmp_path / "run"
    args = tiny_overrides(small_data, tmp_path / "runs", **{"trainer.max_update": 4})
    with caplog.at_level(logging.INFO, logger="biogpt_train"):
        run_in_process(args, run_dir)
    text = caplog.text
    assert "progress: update 1/4 (25%) | epoch 1 | loss " in text and "ETA 0:" in text
    assert "progress: update 4/4 (100%)" in text  # the last update is always shown
    assert "training finished (trainer.max_update=4 reached): 4 updates" in text
    assert f"run directory: {run_dir}" in text and "checkpoint_last.pt" in text
    assert "next: python -m biogpt_train.generate text --checkpoint" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="biogpt_train"):
        run_in_process(args, run_dir)  # the same command again
    assert "is already complete (update 4 reached trainer.max_update=4)" in caplog.text
    assert "new run_name" in caplog.text and "progress:" not in caplog.text


def test_eta_honours_every_budget(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    p = progress.Progress(max_update=0, max_epoch=3, stop_time_hours=0, start_update=0, elapsed_before=0)
    clock[0] += 10  # 10 updates in 10 s, 10 updates per epoch, in epoch 2 at position 0
    assert p.remaining_updates(10, 2, 0, 10) == 20 and p.eta(10, 2, 0, 10) == pytest.approx(20)
    p = progress.Progress(max_update=15, max_epoch=3, stop_time_hours=0, start_update=0, elapsed_before=0)
    clock[0] += 10
    assert p.eta(10, 2, 0, 10) == pytest.approx(5)  # max_update comes first
    p = progress.Progress(max_update=1000, max_epoch=0, stop_time_hours=1 / 360, start_update=0, elapsed_before=4)
    clock[0] += 3
    assert p.eta(3, 1, 3, 10) == pytest.approx(3)  # 10 s budget, 4 s before this launch, 3 s now


def test_epoch_checkpoints_leave_the_optimizer_out(tmp_path, small_data):
    run_dir = tmp_path / "run"
    run_in_process(tiny_overrides(small_data, tmp_path / "runs", **{"trainer.max_update": 0,
                                                                   "trainer.max_epoch": 2}), run_dir)
    save = run_dir / "checkpoints"
    epoch, last = (torch.load(save / n, weights_only=True) for n in ("checkpoint2.pt", "checkpoint_last.pt"))
    assert "optimizer" not in epoch["train_state"] and "optimizer" in last["train_state"]
    assert (save / "checkpoint2.pt").stat().st_size < 0.5 * (save / "checkpoint_last.pt").stat().st_size
    assert torch.equal(epoch["model"]["decoder.embed_tokens.weight"], last["model"]["decoder.embed_tokens.weight"])
    run_dir2 = tmp_path / "run2"
    run_in_process(tiny_overrides(small_data, tmp_path / "runs", **{
        "trainer.max_update": 0, "trainer.max_epoch": 1,
        "checkpoint.save_optimizer_state_in_epoch_checkpoints": "true"}), run_dir2)
    assert "optimizer" in torch.load(run_dir2 / "checkpoints" / "checkpoint1.pt", weights_only=True)["train_state"]


def test_truncated_checkpoint_last_falls_back_to_the_newest_readable(tmp_path, small_data, caplog):
    run_dir = tmp_path / "run"
    extra = {"trainer.max_update": 4, "checkpoint.save_interval_updates": 2}
    run_in_process(tiny_overrides(small_data, tmp_path / "runs", **extra), run_dir)
    save = run_dir / "checkpoints"
    last = save / "checkpoint_last.pt"
    # a copy cut short (a new file, so the hard-linked checkpoint_1_4.pt stays intact)
    data = last.read_bytes()
    last.unlink()
    last.write_bytes(data[: len(data) // 3])
    with caplog.at_level(logging.INFO, logger="biogpt_train"):
        run_in_process(tiny_overrides(small_data, tmp_path / "runs", **{**extra, "trainer.max_update": 6}), run_dir)
    assert f"{last}: unreadable (" in caplog.text
    assert f"resuming from the newest readable checkpoint instead: {save / 'checkpoint_1_4.pt'} (update 4)" \
        in caplog.text
    assert max(read_metrics(run_dir)) == 6
    assert torch.load(last, weights_only=True)["train_state"]["num_updates"] == 6


def test_no_readable_checkpoint_is_one_clear_line(tmp_path, small_data):
    from biogpt_train.train.resume import UnreadableCheckpointError, load_resume

    (tmp_path / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UnreadableCheckpointError, match=r"checkpoint_last.pt: unreadable .*delete .* to start"):
        load_resume(tmp_path / "checkpoint_last.pt", tmp_path)
    assert load_resume(tmp_path / "absent.pt", tmp_path) is None
