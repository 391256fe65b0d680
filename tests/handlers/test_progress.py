# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""progress_bar's settings for terminals and log files, and TrainingProgress on tiny Ignite engines (no timing)."""

from __future__ import annotations

import io

import pytest
import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader

from monai_bigan.handlers import ResidualStatisticsHandler, TrainingProgress, progress_bar
from monai_bigan.handlers.progress import NON_TTY_MININTERVAL, is_interactive
from monai_bigan.inferers import AnomalyScorer, ResidualStatistics
from tests.conftest import tiny_bigan


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _engine() -> Engine:
    return Engine(lambda engine, batch: None)


def _record(engine: Engine, progress: TrainingProgress) -> list[tuple[int, int, float]]:
    """``(engine iteration, bar position, bar total)`` after each iteration, read after the progress handler ran."""
    seen: list[tuple[int, int, float]] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((e.state.iteration, progress.bar.n, progress.bar.total))
    )
    return seen


def test_progress_bar_settings_for_log_files_and_terminals():
    log = io.StringIO()
    assert not is_interactive(log) and is_interactive(_Terminal())
    bar = progress_bar(range(3), desc="x", unit="scan", file=log)
    assert bar.mininterval == NON_TTY_MININTERVAL and bar.leave and not bar.disable and bar.total == 3
    assert list(bar) == [0, 1, 2]
    assert "x: 100%" in log.getvalue() and "3/3" in log.getvalue()  # the final state stays in the log

    terminal = progress_bar(range(3), file=_Terminal())
    assert terminal.mininterval < NON_TTY_MININTERVAL and terminal.dynamic_ncols
    terminal.close()
    # a short repeated phase: erased on a terminal, silent in a log file unless it lasts
    assert not progress_bar(range(3), transient=True, file=_Terminal()).leave
    quiet = progress_bar(range(3), transient=True, file=log)
    assert quiet.leave and quiet.delay == NON_TTY_MININTERVAL
    # disabled: iteration passes through, nothing is written
    silent = io.StringIO()
    assert list(progress_bar(range(3), enabled=False, file=silent)) == [0, 1, 2] and silent.getvalue() == ""
    # tqdm arguments override the settings
    assert progress_bar(total=2, file=log, mininterval=1.0).mininterval == 1.0


def test_one_bar_over_all_epochs_with_the_epoch():
    out = io.StringIO()
    engine = _engine()
    progress = TrainingProgress(file=out)
    progress.attach(engine)
    seen = _record(engine, progress)
    engine.run(range(4), max_epochs=3)
    assert [s[0] for s in seen] == list(range(1, 13))
    assert all(n == it and total == 12 for it, n, total in seen)  # one bar of max_epochs * epoch_length
    assert progress.bar is None  # closed at completion
    text = out.getvalue()
    assert text.count("0/12") == 1 and "12/12" in text and "epoch 3/3" in text
    assert text.endswith("\n")  # left in the log


def test_resumed_run_starts_at_the_resumed_iteration():
    engine = _engine()
    progress = TrainingProgress(file=io.StringIO())
    progress.attach(engine)
    seen = _record(engine, progress)
    engine.load_state_dict({"iteration": 4, "epoch_length": 4, "max_epochs": 3})  # as a ResumeHandler would
    engine.run(range(4))
    assert seen[0] == (5, 5, 12) and seen[-1] == (12, 12, 12) and len(seen) == 8


def test_resume_at_started_is_seen():
    """The bar opens after the STARTED handlers, so a checkpoint loaded at STARTED sets its start."""
    engine = _engine()
    progress = TrainingProgress(file=io.StringIO())
    progress.attach(engine)  # attached before the loader, as in a handler list

    def resume(e: Engine) -> None:
        e.state.iteration, e.state.epoch = 8, 2

    engine.add_event_handler(Events.STARTED, resume)
    seen = _record(engine, progress)
    engine.run(range(4), max_epochs=3)
    assert seen == [(9, 9, 12), (10, 10, 12), (11, 11, 12), (12, 12, 12)]


def test_terminated_run_closes_the_bar_and_a_new_run_opens_a_new_one():
    out = io.StringIO()
    engine = _engine()
    progress = TrainingProgress(desc="eval", file=out)
    progress.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    engine.run(range(4), max_epochs=2)
    assert progress.bar is None and "2/8" in out.getvalue()

    evaluator, out = _engine(), io.StringIO()  # one epoch: no epoch shown
    progress = TrainingProgress(desc="eval", file=out)
    progress.attach(evaluator)
    seen = _record(evaluator, progress)
    for _ in range(2):  # an evaluator runs again at each validation: one bar per pass
        evaluator.run(range(3))
    assert [s[1] for s in seen] == [1, 2, 3, 1, 2, 3] and progress.bar is None
    assert out.getvalue().count("3/3") == 2 and "epoch" not in out.getvalue()


def test_disabled_attaches_nothing():
    engine = _engine()
    TrainingProgress(enabled=False).attach(engine)
    assert not any(engine._event_handlers.values())


@pytest.mark.parametrize("progress", [True, False])
def test_residual_statistics_progress_counts_scans(monkeypatch, progress):
    torch.manual_seed(0)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    images = [{"image": torch.rand(1, 16, 16) * 2 - 1} for _ in range(5)]
    loader = DataLoader(images, batch_size=2)
    stats = ResidualStatistics()
    evaluator = _engine()
    handler = ResidualStatisticsHandler(
        stats, AnomalyScorer(tiny_bigan(2), residual="signed"), loader, progress=progress
    )
    handler.attach(evaluator)
    evaluator.run([0])
    assert int(stats.num_samples) == 5
    text = terminal.getvalue()
    if progress:
        # one step per scan (5 scans in 3 batches), erased when done
        assert "residual statistics" in text and "0/5 " in text and "scan/s" in text and text.endswith("\r")
    else:
        assert text == ""
