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
"""
Progress bars with an ETA for the long phases of a run: :py:func:`progress_bar` (a ``tqdm`` with the package's
settings for terminals and log files) and :py:class:`TrainingProgress`, one bar over a whole Ignite run.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import
from tqdm import tqdm

from monai_bigan.utils.distributed import get_rank
from monai_bigan.utils.progress import NON_TTY_MININTERVAL, is_interactive, progress_bar

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["NON_TTY_MININTERVAL", "TrainingProgress", "is_interactive", "progress_bar"]


class TrainingProgress:
    """
    One progress bar over a whole Ignite run: ``max_epochs * epoch_length`` iterations, with the epoch and an ETA
    for the end of the run (where Ignite's ``ProgressBar`` shows one bar per epoch).

    The bar opens at the first ``EPOCH_STARTED`` of a run, after the ``STARTED`` handlers, so that a run resumed
    from a checkpoint starts at the resumed iteration. It advances at every ``ITERATION_COMPLETED`` and closes at
    ``COMPLETED`` or ``TERMINATE``. Its rate is the average since the bar opened (``smoothing=0``), so the ETA
    includes the validation passes between epochs. Only rank 0 of a distributed run shows it. Attached to an
    evaluator (one epoch), it is one bar per evaluation pass.

    Args:
        desc: prefix of the bar.
        unit: name of one iteration.
        enabled: False makes :py:meth:`attach` a no-op.
        file: the stream, ``sys.stderr`` by default.
        kwargs: further arguments of :py:func:`progress_bar` (``transient``, ``mininterval``, ...).

    Example::

        trainer = BiGANTrainer(...)
        TrainingProgress().attach(trainer)  # "training: 35%|███▌      | 420/1200 [02:10<04:02, 3.22it/s, epoch 35/100]"
    """

    def __init__(
        self,
        desc: str = "training",
        unit: str = "it",
        enabled: bool = True,
        file: IO | None = None,
        **kwargs: Any,
    ) -> None:
        self.desc = desc
        self.unit = unit
        self.enabled = bool(enabled)
        self.file = file
        self.kwargs = {"smoothing": 0.0, **kwargs}
        self.bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (rank 0 only; nothing when disabled)."""
        if not self.enabled or get_rank() != 0:
            return
        # a bar left open by a run that raised is closed when the engine runs again
        engine.add_event_handler(Events.STARTED, self.close)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.close)
        engine.add_event_handler(Events.TERMINATE, self.close)

    def epoch_started(self, engine: Engine) -> None:
        """Open the bar at the first epoch of a run (at the resumed iteration) and show the epoch."""
        state = engine.state
        epoch = (
            f"epoch {state.epoch}/{state.max_epochs}" if state.max_epochs is not None and state.max_epochs > 1 else ""
        )
        if self.bar is None:
            total = None
            if state.max_epochs is not None and state.epoch_length is not None:
                total = state.max_epochs * state.epoch_length
            self.bar = progress_bar(
                total=total,
                desc=self.desc,
                unit=self.unit,
                file=self.file,
                initial=state.iteration,
                postfix=epoch or None,
                **self.kwargs,
            )
        elif epoch:
            self.bar.set_postfix_str(epoch, refresh=False)

    def iteration_completed(self, engine: Engine) -> None:
        """Advance the bar to the engine's iteration."""
        if self.bar is None:  # attached after the run started
            self.epoch_started(engine)
        self.bar.update(engine.state.iteration - self.bar.n)

    def close(self, engine: Engine | None = None) -> None:
        """Close the bar, if open."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
