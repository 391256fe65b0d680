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
PCA reconstruction baseline: a linear "autoencoder" fitted on healthy training images flattened on the fixed model
grid (scikit-learn's PCA), scored like the BiGAN by the residual between an image and its projection onto the
healthy principal subspace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
import torch
from monai.utils import optional_import

from monai_bigan.baselines.base import FittedBaseline
from monai_bigan.inferers.voxel_statistics import iter_images

__all__ = ["PCABaseline"]

logger = logging.getLogger(__name__)


class PCABaseline(FittedBaseline):
    """
    Reconstruction anomaly maps from a PCA of healthy training images on a fixed grid.

    ``fit`` flattens every training item ``(C, *spatial)`` to one sample of ``C * prod(spatial)`` features and fits
    :py:class:`sklearn.decomposition.PCA`; the mean and the principal directions W ``(k, n_features)`` are kept as
    float32 buffers, so ``forward`` is pure torch and runs on any device:

        recon = mean + ((x - mean) @ W^T) @ W

    and returns, like :py:class:`monai_bigan.inferers.AnomalyScorer`, a tensor ``(B, 3, *spatial)``:

        - channel 0: the residual ``|x - recon|`` (``"l1"``, the BiGAN default) or ``(x - recon)**2`` (``"l2"``),
          averaged over the input channels;
        - channel 1: the reconstruction (first input channel);
        - channel 2: zeros (no discriminator term), so :py:class:`monai_bigan.transforms.AnomalyScored` gives
          ``alpha`` times the mean residual (use ``alpha=1.0`` for the plain mean).

    Two uses:

        - 3D, or 2D images: one sample per image, e.g. 48 training volumes on a (1, 64, 64, 48) grid, 196,608
          features. With fewer samples than features (the usual case) the fit costs O(n_samples^2 * n_features) and at
          most n_samples - 1 components are meaningful, so ``n_components`` is clamped to that.
        - 2D slice model: slices as samples, items ``(C, H, W)``, e.g.
          ``PCABaseline().fit(torch.cat([v.movedim(-1, 0) for v in volumes]))`` for volumes ``(C, H, W, D)``, and
          score whole volumes through ``monai.inferers.SliceInferer(spatial_dim=2)``.

    Unlike :py:class:`ZScoreBaseline`, the fit holds the whole training matrix in memory (float64,
    ``8 * n_samples * n_features`` bytes, plus scikit-learn's working copies).

    Args:
        n_components: a float in (0, 1): the smallest number of components explaining that fraction of the variance
            (needs an exact SVD); or an int >= 1, clamped to ``min(n_samples - 1, n_features)``.
        residual: ``"l1"`` or ``"l2"``.
        svd_solver: ``"auto"`` picks, with ``m = min(n_samples, n_features)``: for a float ``n_components``
            scikit-learn's ``"auto"`` (an exact ``"full"`` economy SVD, or ``"covariance_eigh"`` for many samples of
            few features); for an int, ``"full"`` when ``m <= 500`` (the economy SVD costs O(m^2 * max(n_samples,
            n_features)), cheaper than randomized here, e.g. 48 volumes of 200k voxels) or when ``n_components >=
            0.8 * m``, and ``"randomized"`` (seeded by ``random_state``) otherwise, e.g. thousands of 2D slices with
            a few dozen components. Any other value is passed to scikit-learn, except that ``"randomized"`` and
            ``"arpack"`` become ``"full"`` for a float ``n_components``, which they do not support.
        random_state: seed of the randomized solver.

    Example::

        pca = PCABaseline(n_components=0.95).fit(train_loader)      # batches {"image": (B, 1, 64, 64, 48)}
        maps = pca(torch.rand(2, 1, 64, 64, 48) * 2 - 1)            # (2, 3, 64, 64, 48)
        pca2d = PCABaseline(n_components=20).fit(torch.rand(200, 1, 64, 64))  # 200 slices as samples
        maps = pca2d(torch.rand(4, 1, 64, 64))                      # (4, 3, 64, 64)
    """

    def __init__(
        self,
        n_components: int | float = 0.95,
        residual: str = "l1",
        svd_solver: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        super().__init__()
        if isinstance(n_components, bool) or not isinstance(n_components, (int, float, np.integer, np.floating)):
            raise TypeError(f"n_components must be an int or a float, got {type(n_components).__name__}.")
        if isinstance(n_components, (float, np.floating)) and not 0.0 < n_components < 1.0:
            raise ValueError(f"a float n_components must be in (0, 1), got {n_components}.")
        if isinstance(n_components, (int, np.integer)) and n_components < 1:
            raise ValueError(f"an int n_components must be >= 1, got {n_components}.")
        if residual not in ("l1", "l2"):
            raise ValueError(f"residual must be 'l1' or 'l2', got {residual!r}.")
        self.n_components = n_components
        self.residual = residual
        self.svd_solver = svd_solver
        self.random_state = random_state
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("components", torch.zeros(0, 0))
        self.register_buffer("explained_variance_ratio", torch.zeros(0))
        self.register_buffer("num_samples", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"n_components={self.n_components}, residual={self.residual!r}, svd_solver={self.svd_solver!r}, "
            f"grid_shape={self.grid_shape}, n_components_={self.n_components_}"
        )

    @property
    def n_components_(self) -> int:
        """Number of fitted principal components (0 before fitting)."""
        return int(self.components.shape[0])

    def _choose_solver(self, n_samples: int, n_features: int) -> tuple[int | float, str]:
        """The ``n_components`` and ``svd_solver`` handed to scikit-learn (see the class docstring)."""
        small = min(n_samples, n_features)
        solver = self.svd_solver
        if isinstance(self.n_components, (float, np.floating)):
            if solver in ("randomized", "arpack"):
                solver = "full"
            return float(self.n_components), solver
        n_components = min(int(self.n_components), max(min(n_samples - 1, n_features), 1))
        if solver == "auto":
            solver = "full" if small <= 500 or n_components >= 0.8 * small else "randomized"
        return n_components, solver

    @torch.no_grad()
    def fit(
        self, source: Iterable | torch.Tensor | np.ndarray, image_key: str = "image", batched: bool | None = None
    ) -> PCABaseline:
        """
        Fit the PCA on healthy training items, each flattened to one sample.

        Args:
            source: a stack ``(N, C, *spatial)``, an iterable of items ``(C, *spatial)`` (or of dictionaries holding
                them under ``image_key``), or a ``DataLoader`` yielding batches ``(B, C, *spatial)`` or dictionaries
                of them. All items must share one shape, the fixed grid.
            image_key: key of the image in dictionary elements.
            batched: whether the elements of an iterable are batches; by default True for a ``DataLoader`` only.

        Returns:
            self, fitted.

        Raises:
            ValueError: when the items differ in shape, are not channel-first arrays, or are fewer than two.
        """
        # imported here: scikit-learn takes seconds to import and only fitting needs it (forward is pure torch)
        pca_class, _ = optional_import("sklearn.decomposition", name="PCA")
        rows: list[np.ndarray] = []
        shape: tuple[int, ...] | None = None
        for item in iter_images(source, image_key=image_key, batched=batched):
            if item.dim() < 2:
                raise ValueError(f"items must be channel-first (C, *spatial), got shape {tuple(item.shape)}.")
            if shape is None:
                shape = tuple(item.shape)
            elif tuple(item.shape) != shape:
                raise ValueError(
                    f"all items must share the fixed grid: item {len(rows)} has shape {tuple(item.shape)}, "
                    f"the first had {shape}."
                )
            rows.append(item.to(device="cpu", dtype=torch.float32).reshape(-1).numpy())
        n_samples = len(rows)
        if shape is None or n_samples < 2:
            raise ValueError(f"PCABaseline needs at least two training items, got {n_samples}.")
        data = np.stack(rows).astype(np.float64)
        del rows
        n_features = data.shape[1]

        n_components, solver = self._choose_solver(n_samples, n_features)
        # the decomposition has no progress to show: say what it works on, and how long it took
        logger.info(
            f"PCA baseline: decomposing {n_samples} samples x {n_features} features "
            f"(svd_solver={solver!r}, n_components={n_components})..."
        )
        start = time.perf_counter()
        pca = pca_class(n_components=n_components, svd_solver=solver, random_state=self.random_state, copy=False)
        pca.fit(data)
        # centred data has rank <= n_samples - 1: any further component is numerical noise
        k = min(int(pca.n_components_), max(min(n_samples - 1, n_features), 1))
        logger.info(
            f"PCA baseline: {k} components explain {100 * float(np.sum(pca.explained_variance_ratio_[:k])):.1f}% of "
            f"the variance ({time.perf_counter() - start:.1f} s)."
        )

        device = self.mean.device
        self.mean = torch.as_tensor(pca.mean_, dtype=torch.float32, device=device).reshape(shape)
        self.components = torch.as_tensor(pca.components_[:k], dtype=torch.float32, device=device).contiguous()
        self.explained_variance_ratio = torch.as_tensor(
            pca.explained_variance_ratio_[:k], dtype=torch.float32, device=device
        )
        self.num_samples = torch.tensor(n_samples, dtype=torch.long, device=device)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """
        Project a batch onto the fitted principal subspace.

        Args:
            x: batch ``(B, C, *spatial)`` on the fitted grid.

        Returns:
            the reconstruction, same shape as ``x``.

        Raises:
            RuntimeError: when the module is not fitted.
            ValueError: when ``x`` does not match the fitted grid.
        """
        x = self._check_input(x)
        mean = self.mean.to(device=x.device, dtype=x.dtype).reshape(1, -1)
        w = self.components.to(device=x.device, dtype=x.dtype)
        centred = x.reshape(x.shape[0], -1) - mean
        return ((centred @ w.T) @ w + mean).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: batch ``(B, C, *spatial)`` on the fitted grid.

        Returns:
            ``(B, 3, *spatial)``: residual map, reconstruction, zeros.

        Raises:
            RuntimeError: when the module is not fitted.
            ValueError: when ``x`` does not match the fitted grid.
        """
        x = self._check_input(x)
        recon = self.reconstruct(x)
        diff = x - recon
        res = diff.abs() if self.residual == "l1" else diff * diff
        return self._assemble(res, recon)
