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
"""Sharing the items of a data set between the ranks of a distributed run, each item exactly once."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import Sampler

from monai_bigan.utils.distributed import get_rank, get_world_size

__all__ = ["DistributedShareSampler"]


class DistributedShareSampler(Sampler[int]):
    """
    The indices ``rank, rank + num_replicas, ...`` of a data set, in order: every item goes to exactly one rank, none
    is padded or repeated, and ranks beyond the data set's length get none. This is the split of
    ``monai.data.DistributedSampler(even_divisible=False, shuffle=False)``, which refuses a data set smaller than the
    number of ranks, as a resumed batch with few inputs left often is.

    Args:
        dataset: the data set (only its length is used).
        num_replicas: number of ranks (default: the process group's world size, 1 without one).
        rank: this rank (default: the process group's rank, 0 without one).

    Example::

        loader = DataLoader(dataset, batch_size=1, sampler=DistributedShareSampler(dataset))
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        self.dataset = dataset
        self.num_replicas = get_world_size() if num_replicas is None else int(num_replicas)
        self.rank = get_rank() if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}.")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))
