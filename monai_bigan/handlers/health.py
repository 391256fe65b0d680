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
Handler that watches the adversarial losses of a BiGAN during training and reports discriminator collapse and
encoder-generator divergence, the usual failure modes of BiGAN/EGBAD training (Zenati et al., arXiv:1802.06222:
reference runs that scored well after 100 epochs collapsed after more).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from numbers import Number
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.utils.enums import BiGANKeys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TrainingHealthMonitor", "TrainingCollapseError"]

# both losses of a balanced BiGAN trained with BiGANLoss: the sum of two binary cross-entropies at D = 1/2
_BALANCED_LOSS = 2.0 * math.log(2.0)
_ACTIONS = ("warn", "stop", "error")


class TrainingCollapseError(RuntimeError):
    """Training stopped because :py:class:`TrainingHealthMonitor` detected a collapse or a divergence."""


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class TrainingHealthMonitor:
    """
    Detects discriminator collapse and encoder-generator divergence from the running mean of the losses of a
    :py:class:`monai_bigan.engines.BiGANTrainer`, and warns (or stops training) with what to do about it.

    At each iteration the discriminator loss ``engine.state.output["d_loss"]`` and the encoder + generator loss
    ``engine.state.output["eg_loss"]`` are added to device-side sums, without a host-device sync; every
    ``check_every`` iterations the window means are read (one sync; with ``all_ranks`` one all-reduce) and compared
    with two thresholds:

    - **collapse**: mean discriminator loss below ``collapse_d_loss`` for ``patience`` consecutive checks. The
      discriminator tells real pairs (x, E(x)) from generated pairs (G(z), z) almost perfectly, so the encoder and
      the generator get vanishing gradients and stop learning.
    - **divergence**: mean encoder + generator loss above ``divergence_eg_loss`` for ``patience`` consecutive checks
      (pass ``eg_loss_key="eg_adv_loss"`` to watch the adversarial part alone, without the weighted
      reconstruction term, as the training bundle does).

    A balanced BiGAN trained with :py:class:`monai_bigan.losses.BiGANLoss` keeps both losses near 2 ln 2 = 1.39.

    When a condition is met, one WARNING names the iteration and epoch, the window means, what the condition means
    and what to do; the event is appended to ``engine.state.health_events`` (a list of dicts) and, if
    ``output_file`` is given, all events are written to it atomically as JSON (the file is also written when
    training completes, so a healthy run leaves a file with no events). A condition is reported once per episode:
    when a check no longer meets it, the episode ends (``"recovered_iteration"`` is set and an INFO line logged) and
    a later episode is reported again.

    Non-finite losses are left out of the means; :py:class:`monai_bigan.engines.BiGANTrainer` stops on them itself.

    In distributed training only rank 0 logs and writes the file. By default each rank judges its own losses, so the
    monitor may be attached on rank 0 only (as ``bundles/bigan/multi_gpu_train.json`` does with the train handlers);
    ``action="warn"`` is then safe. ``action="stop"`` or ``"error"`` must stop every rank together, otherwise the
    others wait in DDP's next gradient all-reduce: attach the monitor on every rank with ``all_ranks=True``, which
    averages the window sums over the ranks (one all-reduce per check) so that all ranks decide alike.

    Args:
        check_every: every how many iterations the window means are read and checked.
        collapse_d_loss: the discriminator loss below which the discriminator counts as collapsed; None disables
            the collapse check.
        divergence_eg_loss: the encoder + generator loss above which training counts as diverging; None disables
            the divergence check.
        patience: number of consecutive checks a condition must hold before it is reported.
        action: ``"warn"`` (log and record only), ``"stop"`` (also ``engine.terminate()``, so training ends after
            this iteration and the usual final handlers run) or ``"error"`` (also raise
            :py:class:`TrainingCollapseError`).
        output_file: JSON file the events are written to, e.g. ``logs/training_health.json``; None writes nothing.
        best_checkpoint: the checkpoint selected on validation data (e.g. ``models/model_best.pt``), named in the
            advice; None names ``model_best.pt`` generically.
        d_loss_key: key of the discriminator loss in ``engine.state.output``.
        eg_loss_key: key of the encoder + generator loss in ``engine.state.output``.
        all_ranks: all-reduce the window sums over the ranks at each check; only when the monitor is attached on
            every rank (otherwise rank 0 would wait forever). Ignored without a process group.
        name: name of the logger, default ``monai_bigan.handlers.health``.

    Raises:
        ValueError: when ``check_every`` or ``patience`` is smaller than 1, both checks are disabled or ``action``
            is not one of ``"warn"``, ``"stop"``, ``"error"``.

    Example::

        monitor = TrainingHealthMonitor(check_every=10, patience=5, output_file="logs/training_health.json")
        monitor.attach(trainer)
        trainer.run()
        trainer.state.health_events  # [{"type": "collapse", "iteration": 730, "epoch": 15, ...}]
    """

    def __init__(
        self,
        check_every: int = 10,
        collapse_d_loss: float | None = 0.05,
        divergence_eg_loss: float | None = 15.0,
        patience: int = 3,
        action: str = "warn",
        output_file: str | os.PathLike | None = None,
        best_checkpoint: str | os.PathLike | None = None,
        d_loss_key: str = BiGANKeys.D_LOSS,
        eg_loss_key: str = BiGANKeys.EG_LOSS,
        all_ranks: bool = False,
        name: str | None = None,
    ) -> None:
        if int(check_every) < 1 or int(patience) < 1:
            raise ValueError(f"check_every and patience must be >= 1, got {check_every} and {patience}.")
        if collapse_d_loss is None and divergence_eg_loss is None:
            raise ValueError("collapse_d_loss and divergence_eg_loss are both None: nothing to check.")
        if action not in _ACTIONS:
            raise ValueError(f"action must be one of {_ACTIONS}, got {action!r}.")
        self.check_every = int(check_every)
        self.collapse_d_loss = None if collapse_d_loss is None else float(collapse_d_loss)
        self.divergence_eg_loss = None if divergence_eg_loss is None else float(divergence_eg_loss)
        self.patience = int(patience)
        self.action = action
        self.output_file = output_file
        self.best_checkpoint = best_checkpoint
        self.d_loss_key = d_loss_key
        self.eg_loss_key = eg_loss_key
        self.all_ranks = all_ranks
        self.logger = logging.getLogger(name or __name__)
        self.events: list[dict[str, Any]] = []
        self._reset()

    def _reset(self, device: torch.device | str = "cpu") -> None:
        # [d_loss sum, eg_loss sum] and [d_loss count, eg_loss count] of the finite values since the last check
        self._sums = torch.zeros(2, dtype=torch.float32, device=device)
        self._counts = torch.zeros(2, dtype=torch.float32, device=device)
        self._window_start: int | None = None  # first iteration accumulated since the last check
        self._runs = {"collapse": 0, "divergence": 0}
        self._run_start = {"collapse": 0, "divergence": 0}
        self._active: dict[str, dict[str, Any] | None] = {"collapse": None, "divergence": None}

    def attach(self, engine: Engine) -> None:
        """
        Register the handlers on ``engine``: the accumulation at every iteration, the check every ``check_every``
        iterations and the final write of ``output_file`` when the run completes.

        Args:
            engine: the trainer, e.g. a :py:class:`monai_bigan.engines.BiGANTrainer`.
        """
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.accumulate)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.check_every), self.check)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        """Reset the windows; keep the events of an earlier run of the same engine."""
        self._reset(getattr(engine.state, "device", None) or "cpu")
        if not isinstance(getattr(engine.state, "health_events", None), list):
            engine.state.health_events = []
        self.events = engine.state.health_events

    @torch.no_grad()
    def accumulate(self, engine: Engine) -> None:
        """Add this iteration's losses to the device-side sums (no host-device sync)."""
        output = engine.state.output
        if not isinstance(output, Mapping):
            return
        losses = [output.get(self.d_loss_key), output.get(self.eg_loss_key)]
        if not all(isinstance(v, (torch.Tensor, Number)) for v in losses):
            return
        if self._window_start is None:  # set here, not at STARTED, so that a resumed iteration count is used
            self._window_start = engine.state.iteration
        device = losses[0].device if isinstance(losses[0], torch.Tensor) else self._sums.device
        if self._sums.device != device:  # the first iteration tells the device of the losses
            self._sums, self._counts = self._sums.to(device), self._counts.to(device)
        values = torch.stack([torch.as_tensor(v, device=device).detach().float().mean() for v in losses])
        finite = torch.isfinite(values)
        self._sums += torch.where(finite, values, torch.zeros_like(values))
        self._counts += finite

    def check(self, engine: Engine) -> None:
        """
        Read the window means (one sync), update the consecutive-check counts and report a condition that has held
        for ``patience`` checks.

        Raises:
            TrainingCollapseError: with ``action="error"``, when a condition is reported.
        """
        stats = torch.cat([self._sums, self._counts])
        if self.all_ranks and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        d_sum, eg_sum, d_count, eg_count = stats.tolist()
        self._sums.zero_()
        self._counts.zero_()
        window = (self._window_start or engine.state.iteration, engine.state.iteration)
        self._window_start = None
        d_mean = d_sum / d_count if d_count else math.nan
        eg_mean = eg_sum / eg_count if eg_count else math.nan
        # comparisons with NaN are False: a window without finite losses ends an episode rather than extending it
        collapsed = self.collapse_d_loss is not None and d_mean < self.collapse_d_loss
        diverging = self.divergence_eg_loss is not None and eg_mean > self.divergence_eg_loss
        reports = []
        for kind, bad in (("collapse", collapsed), ("divergence", diverging)):
            if not bad:
                self._runs[kind] = 0
                if self._active[kind] is not None:
                    self._recovered(engine, kind, d_mean, eg_mean)
                continue
            self._runs[kind] += 1
            if self._runs[kind] == 1:
                self._run_start[kind] = window[0]
            if self._runs[kind] >= self.patience and self._active[kind] is None:
                reports.append(self._report(engine, kind, d_mean, eg_mean))
        if not reports:
            return
        self._write(engine)
        if self.action == "stop":
            engine.terminate()
        elif self.action == "error":
            raise TrainingCollapseError("\n".join(reports))

    def completed(self, engine: Engine) -> None:
        """Write ``output_file`` at the end of training, with or without events."""
        self._write(engine)

    def _report(self, engine: Engine, kind: str, d_mean: float, eg_mean: float) -> str:
        iteration, epoch = engine.state.iteration, engine.state.epoch
        threshold = self.collapse_d_loss if kind == "collapse" else self.divergence_eg_loss
        event = {
            "type": kind,
            "iteration": iteration,
            "epoch": epoch,
            "since_iteration": self._run_start[kind],
            "d_loss_mean": d_mean if math.isfinite(d_mean) else None,
            "eg_loss_mean": eg_mean if math.isfinite(eg_mean) else None,
            "threshold": threshold,
            "patience": self.patience,
            "check_every": self.check_every,
            "action": self.action,
            "recovered_iteration": None,
        }
        self.events.append(event)
        self._active[kind] = event
        best = str(self.best_checkpoint) if self.best_checkpoint is not None else "model_best.pt"
        windows = (
            f"in {self.patience} consecutive check(s) of {self.check_every} iteration(s) "
            f"(iterations {self._run_start[kind]}-{iteration}); last window: d_loss {d_mean:.4g}, eg_loss {eg_mean:.4g}; "
            f"a balanced BiGAN keeps both near 2 ln 2 = {_BALANCED_LOSS:.3f}"
        )
        if kind == "collapse":
            what = (
                f"discriminator collapse at iteration {iteration} (epoch {epoch}): the mean discriminator loss was "
                f"below {threshold:g} {windows}. The discriminator tells real (x, E(x)) from generated (G(z), z) pairs "
                "almost perfectly, so the encoder and generator get vanishing gradients and stop learning; anomaly "
                "scores of later epochs usually get worse."
            )
        else:
            what = (
                f"encoder-generator divergence at iteration {iteration} (epoch {epoch}): the mean encoder + generator "
                f"loss was above {threshold:g} {windows}. The encoder and generator are losing to the discriminator "
                "(or the loss is exploding) and their updates no longer improve the reconstructions."
            )
        advice = (
            " What to do: lower the learning rates (e.g. --learning_rate 0.0001), enable spectral normalization "
            "(--spectral_norm true), add one-sided label smoothing (--label_smoothing 0.1), add a reconstruction term "
            f"(--recon_weight 1.0), and use or resume from {best}, which is chosen on validation data, rather than "
            "the last checkpoint."
        )
        then = {
            "warn": " Training continues (action='warn').",
            "stop": " Training stops now (action='stop').",
            "error": " Training stops with an error (action='error').",
        }[self.action]
        if self.output_file is not None:
            then += f" Events: {self.output_file}."
        message = what + advice + then
        if _rank() == 0:
            self.logger.warning(message)
        return message

    def _recovered(self, engine: Engine, kind: str, d_mean: float, eg_mean: float) -> None:
        event = self._active[kind]
        self._active[kind] = None
        if event is None:
            return
        event["recovered_iteration"] = engine.state.iteration
        if _rank() == 0:
            self.logger.info(
                f"{kind} reported at iteration {event['iteration']} ended at iteration {engine.state.iteration} "
                f"(epoch {engine.state.epoch}): window means d_loss {d_mean:.4g}, eg_loss {eg_mean:.4g}."
            )
        self._write(engine)

    def _write(self, engine: Engine) -> None:
        if self.output_file is None or _rank() != 0:
            return
        content = {
            "iteration": engine.state.iteration,
            "epoch": engine.state.epoch,
            "settings": {
                "check_every": self.check_every,
                "collapse_d_loss": self.collapse_d_loss,
                "divergence_eg_loss": self.divergence_eg_loss,
                "patience": self.patience,
                "action": self.action,
            },
            "events": self.events,
        }
        atomic_write_text(self.output_file, json.dumps(content, indent=2) + "\n")
