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
:py:class:`monai_bigan.handlers.ResumeHandler` for multi-GPU / multi-node training with ``DistributedDataParallel``,
as used by ``bundles/bigan/multi_gpu_train.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.handlers.checkpoint import ResumeHandler
from monai_bigan.utils.distributed import attach_rank_zero_first, get_rank

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["DistributedResumeHandler"]


class DistributedResumeHandler(ResumeHandler):
    """
    :py:class:`monai_bigan.handlers.ResumeHandler` for distributed training: every rank loads the same checkpoint
    (DDP synchronizes gradients only, so all ranks must restore the same weights, optimizer and engine state), but
    rank 0 runs first and alone cleans the checkpoint folder (stale temporary files; the old epoch checkpoints when
    ``enabled`` is false), the other ranks waiting at a barrier. With ``enabled`` false the other ranks do nothing:
    they start from the weights DDP broadcast from rank 0. Same arguments as ``ResumeHandler``; without a process
    group it behaves exactly like it.

    The checkpoint folder must be visible to all ranks (a shared file system in multi-node training) for a resume.
    """

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``Events.STARTED``, rank 0 before the other ranks (see ``attach_rank_zero_first``)."""
        attach_rank_zero_first(_ResumeAttacher(self), engine)

    def __call__(self, engine: Engine) -> None:
        """Resume (rank 0 also cleans up); on the other ranks only when resuming is enabled."""
        if get_rank() > 0 and not self.enabled:
            return
        super().__call__(engine)


class _ResumeAttacher:
    """Attaches a ``DistributedResumeHandler`` with ``ResumeHandler.attach`` (avoiding the recursion)."""

    def __init__(self, handler: DistributedResumeHandler) -> None:
        self.handler = handler

    def attach(self, engine: Engine) -> None:
        ResumeHandler.attach(self.handler, engine)
