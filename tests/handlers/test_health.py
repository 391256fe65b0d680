"""TrainingHealthMonitor on toy Ignite engines whose losses are forced, and on a real BiGANTrainer."""

from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events

from monai_bigan.engines import BiGANTrainer
from monai_bigan.handlers import TrainingCollapseError, TrainingHealthMonitor
from tests.conftest import tiny_bigan

LOGGER = "monai_bigan.handlers.health"


def _engine(d_loss, eg_loss=None):
    """An engine whose iteration n returns d_loss(n) and eg_loss(n) as device tensors, like BiGANTrainer."""
    eg_loss = eg_loss or (lambda n: 1.4)

    def step(engine, batch):
        n = engine.state.iteration
        return {"d_loss": torch.tensor(float(d_loss(n))), "eg_loss": torch.tensor(float(eg_loss(n)))}

    return Engine(step)


def _run(engine, iterations):
    engine.run(range(iterations), max_epochs=1)
    return engine


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_collapse_fires_after_patience_checks_and_not_before(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    # checks at iterations 2, 4, 6: the third consecutive collapsed check is at iteration 6
    before = _engine(lambda n: 0.01)
    TrainingHealthMonitor(check_every=2, patience=3).attach(before)
    _run(before, 5)
    assert before.state.health_events == [] and _warnings(caplog) == []

    engine = _engine(lambda n: 0.01, lambda n: 7.0)
    TrainingHealthMonitor(check_every=2, patience=3, best_checkpoint="models/model_best.pt").attach(engine)
    _run(engine, 20)
    assert engine.state.iteration == 20  # action="warn" lets training go on
    (event,) = engine.state.health_events  # once per episode, not at every later check
    assert event["type"] == "collapse" and event["iteration"] == 6 and event["epoch"] == 1
    assert event["since_iteration"] == 1 and event["recovered_iteration"] is None
    assert event["d_loss_mean"] == pytest.approx(0.01) and event["eg_loss_mean"] == pytest.approx(7.0)
    (message,) = _warnings(caplog)
    for text in ("collapse", "iteration 6", "epoch 1", "0.01", "--spectral_norm true", "--label_smoothing 0.1"):
        assert text in message
    assert "--recon_weight" in message and "learning rate" in message and "models/model_best.pt" in message


def test_healthy_losses_never_fire(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(400, generator=gen) * 0.2
    engine = _engine(lambda n: 1.3 + noise[n - 1], lambda n: 1.4 - noise[n - 1])
    TrainingHealthMonitor(check_every=5, patience=2).attach(engine)
    _run(engine, 400)
    assert engine.state.health_events == [] and _warnings(caplog) == []


def test_the_check_uses_the_window_mean_not_the_last_value():
    # every other iteration has a collapsed loss, but the window mean (0.1) is above the threshold
    engine = _engine(lambda n: 0.0 if n % 2 == 0 else 0.2)
    TrainingHealthMonitor(check_every=4, collapse_d_loss=0.05, patience=1).attach(engine)
    _run(engine, 16)
    assert engine.state.health_events == []
    # non-finite losses are left out of the mean
    engine = _engine(lambda n: math.nan if n % 2 else 0.01)
    TrainingHealthMonitor(check_every=4, patience=1).attach(engine)
    _run(engine, 4)
    assert engine.state.health_events[0]["d_loss_mean"] == pytest.approx(0.01)


def test_divergence_fires(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    engine = _engine(lambda n: 1.0, lambda n: 2.0 if n <= 10 else 30.0)
    TrainingHealthMonitor(check_every=5, divergence_eg_loss=15.0, patience=2).attach(engine)
    _run(engine, 40)
    (event,) = engine.state.health_events
    assert event["type"] == "divergence" and event["iteration"] == 20 and event["since_iteration"] == 11
    assert event["eg_loss_mean"] == pytest.approx(30.0)
    (message,) = _warnings(caplog)
    assert "divergence" in message and "iteration 20" in message and "--spectral_norm true" in message


def test_episode_ends_and_a_new_one_is_reported_again(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    engine = _engine(lambda n: 0.01 if n <= 10 or n > 20 else 1.3)
    TrainingHealthMonitor(check_every=5, patience=2).attach(engine)
    _run(engine, 30)
    first, second = engine.state.health_events
    assert (first["iteration"], first["recovered_iteration"]) == (10, 15)
    assert (second["iteration"], second["recovered_iteration"]) == (30, None)
    assert len(_warnings(caplog)) == 2
    assert any("ended at iteration 15" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_windows_follow_a_resumed_iteration_count():
    """A resume handler attached after the monitor sets the iteration at STARTED; the windows use that count."""
    engine = _engine(lambda n: 0.0)
    TrainingHealthMonitor(check_every=5, patience=2).attach(engine)
    engine.add_event_handler(
        Events.STARTED, lambda e: (setattr(e.state, "iteration", 100), setattr(e.state, "epoch", 10))
    )
    engine.run(range(10), max_epochs=12)
    assert engine.state.iteration == 120
    (event,) = engine.state.health_events
    assert (event["since_iteration"], event["iteration"]) == (101, 110)


def test_action_stop_terminates_early():
    engine = _engine(lambda n: 0.0)
    TrainingHealthMonitor(check_every=3, patience=2, action="stop").attach(engine)
    _run(engine, 100)
    assert engine.state.iteration == 6 and len(engine.state.health_events) == 1


def test_action_error_raises():
    engine = _engine(lambda n: 0.0)
    TrainingHealthMonitor(check_every=3, patience=2, action="error").attach(engine)
    with pytest.raises(TrainingCollapseError, match="collapse at iteration 6"):
        _run(engine, 100)
    assert engine.state.iteration == 6


def test_json_file_is_written(tmp_path):
    path = tmp_path / "logs" / "training_health.json"
    engine = _engine(lambda n: 0.001)
    TrainingHealthMonitor(check_every=2, patience=2, action="stop", output_file=path).attach(engine)
    _run(engine, 50)
    content = json.loads(path.read_text())
    assert [(e["type"], e["iteration"]) for e in content["events"]] == [("collapse", 4)]
    assert content["settings"]["patience"] == 2 and content["iteration"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["training_health.json"]  # no temporary file left
    # a healthy run still leaves a file, with no events
    healthy = tmp_path / "healthy.json"
    engine = _engine(lambda n: 1.3)
    TrainingHealthMonitor(check_every=2, output_file=healthy).attach(engine)
    _run(engine, 10)
    assert json.loads(healthy.read_text())["events"] == []


def test_one_host_sync_per_check(monkeypatch):
    """Losses are summed on the device; only the check reads them (one ``tolist`` per check, nothing else)."""
    calls = {"tolist": 0, "other": 0}
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "item", "__bool__", "__float__")}

    def spy(name):
        def wrapper(self, *args, **kwargs):
            calls["tolist" if name == "tolist" else "other"] += 1
            return originals[name](self, *args, **kwargs)

        return wrapper

    engine = _engine(lambda n: 1.3)
    TrainingHealthMonitor(check_every=4).attach(engine)
    for name in originals:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    # the toy step builds tensors from floats, which needs no sync; count during the run only
    engine.run(range(12), max_epochs=1)
    monkeypatch.undo()
    assert calls == {"tolist": 3, "other": 0}


def _ddp_worker(rank, world_size, init_file, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # rank 1 alone (0.08) is not collapsed, the mean over the ranks (0.04) is: both ranks stop together
        engine = _engine(lambda n: 0.0 if rank == 0 else 0.08)
        TrainingHealthMonitor(check_every=2, patience=2, action="stop", all_ranks=True).attach(engine)
        _run(engine, 50)
        results[rank] = (engine.state.iteration, [e["d_loss_mean"] for e in engine.state.health_events])
    finally:
        torch.distributed.destroy_process_group()


def test_all_ranks_decide_alike(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(
            _ddp_worker, args=(2, tmp_path / "init", results), nprocs=2, start_method="spawn"
        )
        results = dict(results)
    assert results[0] == results[1]
    assert results[0][0] == 4 and results[0][1] == [pytest.approx(0.04)]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="action"):
        TrainingHealthMonitor(action="ignore")
    with pytest.raises(ValueError, match="check_every"):
        TrainingHealthMonitor(check_every=0)
    with pytest.raises(ValueError, match="nothing to check"):
        TrainingHealthMonitor(collapse_d_loss=None, divergence_eg_loss=None)


def test_works_on_bigan_trainer_outputs():
    """The monitor reads BiGANTrainer's output keys; thresholds that every loss meets force an event."""
    net = tiny_bigan()
    params = itertools.chain(net.encoder.parameters(), net.generator.parameters())
    monitor = TrainingHealthMonitor(check_every=1, collapse_d_loss=1e6, divergence_eg_loss=None, patience=2)
    trainer = BiGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": torch.randn(2, 1, 16, 16)} for _ in range(3)],
        network=net,
        eg_optimizer=torch.optim.Adam(params, 1e-4),
        d_optimizer=torch.optim.Adam(net.discriminator.parameters(), 1e-4),
        train_handlers=[monitor],
    )
    trainer.run()
    (event,) = trainer.state.health_events
    assert event["iteration"] == 2 and 0 < event["d_loss_mean"] < 10 and 0 < event["eg_loss_mean"] < 10
