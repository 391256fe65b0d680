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
Exceptions raised in one subpackage and handled in another, kept in this module at the bottom of the import graph
(it imports nothing from monai_bigan) so that both sides can import them without an import cycle.

Each is also re-exported where it is raised, e.g. :py:class:`NonFiniteLossError` as
``monai_bigan.engines.NonFiniteLossError``.
"""

from __future__ import annotations

__all__ = ["ModelMismatchError", "NonFiniteLossError", "TrainingLockedError"]


class NonFiniteLossError(RuntimeError):
    """
    Training stopped because a loss became NaN or infinite; the message says which loss and at which iteration.

    Raised by :py:class:`monai_bigan.engines.BiGANTrainer`; :py:class:`monai_bigan.handlers.AtomicCheckpointSaver`
    does not write its final checkpoint on it.
    """


class ModelMismatchError(ValueError):
    """
    Model files that do not belong together: a checkpoint whose networks do not fit the networks the config builds
    (it was trained with another ``mode``, preset or network keys), or a calibration or residual statistics fitted for
    other weights than the checkpoint holds (e.g. a training killed after it rewrote one of them). The message is one
    line that names the files and says what to do.

    Raised by :py:func:`monai_bigan.bundle.load_trained_model` and, when resuming, by
    :py:class:`monai_bigan.handlers.ResumeHandler`.
    """


class TrainingLockedError(RuntimeError):
    """
    Another process holds the training lock of a bundle's ``models`` folder (a training or a recalibration is running
    there). The message is one line naming that process (pid, host, start time, command) and the lock file.

    Raised by :py:class:`monai_bigan.utils.TrainingLock`, which :py:class:`monai_bigan.workflows.TrainingRun` and
    :py:class:`monai_bigan.workflows.Recalibration` take before they write anything.
    """
