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
"""Input checks that turn silently wrong scans into clear errors naming the file."""

from __future__ import annotations

import errno
import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["CheckImaged", "CheckInputd", "InvalidImageError", "DEFAULT_MAX_INPUT_VOXELS"]

#: the largest input :py:class:`CheckInputd` accepts by default: 64 million voxels (256 MB as float32) holds a
#: 512 x 512 x 240 CT four times over; bigger inputs are almost always the wrong file and would exhaust memory
DEFAULT_MAX_INPUT_VOXELS = 64_000_000
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_PNG_SUFFIXES = (".png",)
# a slice closer than this (mm) to the previous one along the slice normal is at the same position
_SAME_POSITION_MM = 1e-3


class InvalidImageError(ValueError):
    """An input image that cannot be scored; the message names the file and the problem."""


def _source_name(img: torch.Tensor) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in-memory image>"))


class CheckImaged(MapTransform):
    """
    Check channel-first images right after loading: the expected number of spatial dimensions and channels, a
    non-empty shape, finite values and some contrast. Raises :py:class:`InvalidImageError` naming the file.

    Args:
        keys: keys of the images to check.
        spatial_dims: expected spatial dimensions (3 for volumes, 2 for images); 2D images are also accepted by a
            volume pipeline when ``allow_2d`` is True.
        num_channels: expected channels after ``EnsureChannelFirst``.
        min_size: smallest accepted size of each spatial dimension.
        max_voxels: largest accepted number of voxels (the default, 2**28, is 1 GiB as float32): bigger inputs are
            almost always a mistake (wrong file, or a 4D series read as a volume) and would exhaust memory.
        spacing_range: accepted voxel spacing in mm (from the affine); outside it the header is almost certainly
            wrong (e.g. 0 or 1e6 mm), and resampling would produce garbage.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        CheckImaged("image", spatial_dims=3)({"image": MetaTensor(torch.rand(1, 32, 32, 20))})
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spatial_dims: int = 3,
        num_channels: int = 1,
        min_size: int = 2,
        max_voxels: int = 2**28,
        spacing_range: Sequence[float] = (0.01, 50.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims
        self.num_channels = num_channels
        self.min_size = min_size
        self.max_voxels = max_voxels
        self.spacing_range = (float(spacing_range[0]), float(spacing_range[1]))

    def check(self, img: torch.Tensor) -> None:
        """Raise :py:class:`InvalidImageError` if ``img`` (channel first) cannot be scored."""
        name = _source_name(img)
        shape = tuple(img.shape)
        if len(shape) - 1 != self.spatial_dims:
            extra = " (4D or time series data need a single volume selected first)" if len(shape) - 1 > 3 else ""
            raise InvalidImageError(
                f"{name}: expected a {self.spatial_dims}D image, got an array of shape {shape[1:]} "
                f"with {shape[0]} channel(s){extra}."
            )
        if shape[0] != self.num_channels:
            raise InvalidImageError(
                f"{name}: expected {self.num_channels} channel(s), got {shape[0]} (array shape {shape}, channel "
                "first): a 4D series or multi-channel/RGB image must be reduced to a single volume first."
            )
        if min(shape[1:]) < self.min_size:
            raise InvalidImageError(f"{name}: image is empty or too small, spatial shape {shape[1:]}.")
        if int(np.prod(shape)) > self.max_voxels:
            raise InvalidImageError(
                f"{name}: image has {int(np.prod(shape)):,} voxels (shape {shape}), more than the limit of "
                f"{self.max_voxels:,}; check that this is the right file."
            )
        pixdim = getattr(img, "pixdim", None)
        if pixdim is not None:
            spacing = [float(v) for v in torch.as_tensor(pixdim).reshape(-1)[: self.spatial_dims]]
            low, high = self.spacing_range
            if any(not low <= v <= high for v in spacing):
                raise InvalidImageError(
                    f"{name}: voxel spacing {tuple(round(v, 4) for v in spacing)} mm is outside the accepted range "
                    f"[{low:g}, {high:g}] mm; the header (affine / pixdim) is probably wrong."
                )
        data = torch.as_tensor(img)
        finite = torch.isfinite(data)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise InvalidImageError(f"{name}: {bad} of {data.numel()} voxels are NaN or infinite.")
        if float(data.max()) == float(data.min()):
            raise InvalidImageError(f"{name}: image is constant (all voxels equal {float(data.min()):g}).")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key])
        return d


def _os_problem(error: OSError, path: str) -> str:
    """What went wrong reading ``path``, in words: a link loop, a broken link, a permission problem, ..."""
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if error.errno == errno.ENOENT and os.path.islink(path):
        return f"broken symbolic link to {os.readlink(path)!r}, which does not exist"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return error.strerror or str(error)


def _named_like(path: str, suffixes: Sequence[str]) -> bool:
    return path.lower().endswith(tuple(suffixes))


def _read_dicom_header(path: str) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # a truncated header is reported with the file that has it
        raise InvalidImageError(f"{path}: unreadable DICOM header ({e}).") from e


def _num_frames(header: pydicom.Dataset) -> int:
    return int(header.get("NumberOfFrames") or 1)


def _check_dicom_pixel_data(path: str) -> None:
    """Raise if the pixel data of the DICOM file ``path`` is missing or shorter than its header says."""
    try:
        with warnings.catch_warnings():
            # pydicom warns about a missing end delimiter and goes on: the missing pixel data is reported below
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path)
    except Exception as e:
        raise InvalidImageError(f"{path}: undecodable DICOM file ({e}).") from e
    if "PixelData" not in dataset:
        if "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset:
            return
        raise InvalidImageError(f"{path}: no pixel data; the DICOM file is truncated or holds no image.")
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is not None and pydicom.uid.UID(syntax).is_encapsulated:
        return  # compressed frames have no expected length: a truncated stream loses the whole element (above)
    bits = int(dataset.get("BitsAllocated") or 8)
    pixels = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel") or 1) * _num_frames(dataset)
    expected = math.ceil(pixels * bits / 8)
    actual = len(dataset.PixelData)
    if actual < expected:
        raise InvalidImageError(
            f"{path}: undecodable DICOM instance: truncated pixel data ({actual:,} of {expected:,} bytes); the file "
            "is incomplete or damaged."
        )


class CheckInputd(MapTransform):
    """
    Check input paths before loading, so that every problem gets a clear message naming the file instead of a
    reader's traceback, a silently wrong volume, or minutes spent loading a huge file:

    - a missing file or folder, a broken or looping symbolic link, a file or folder that cannot be read
      (permission denied), an empty (0-byte) file, something that is neither a file nor a folder;
    - an input larger than ``max_voxels``, with the size read from the header before any data is loaded (NIfTI header
      shape, PNG size, DICOM rows x columns x frames);
    - a NIfTI or PNG file whose header cannot be read;
    - a DICOM series folder that holds no DICOM file, mixes several series (which a reader would stack into one
      nonsensical volume), has an unreadable, duplicated (same SOPInstanceUID or same position) or undecodable
      (truncated pixel data) instance, a missing instance (a gap in the slice positions, or in the instance numbers
      when there are no positions), slices of different sizes or orientations, or non-uniform slice spacing: a
      reader would otherwise drop the slice or stretch the volume without a word.

    Args:
        keys: keys holding input paths.
        max_voxels: the largest accepted number of voxels, the product of the header's dimensions (the time points
            of a 4D NIfTI count too); None accepts any size. The bundle key ``max_input_voxels`` sets it.
        spacing_tolerance: accepted deviation of a DICOM slice spacing from the typical spacing of its series, as a
            fraction of that spacing.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        CheckInputd("image", max_voxels=10**8)({"image": "/data/ct_series_01"})
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        max_voxels: int | None = DEFAULT_MAX_INPUT_VOXELS,
        spacing_tolerance: float = 0.05,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if max_voxels is not None and int(max_voxels) < 1:
            raise ValueError(f"max_voxels must be a positive number of voxels or None, got {max_voxels!r}.")
        if not 0 <= spacing_tolerance < 0.5:
            raise ValueError(f"spacing_tolerance must be in [0, 0.5), got {spacing_tolerance!r}.")
        self.max_voxels = None if max_voxels is None else int(max_voxels)
        self.spacing_tolerance = float(spacing_tolerance)

    def check(self, path: str | os.PathLike) -> None:
        """Raise :py:class:`InvalidImageError` if ``path`` cannot hold one scan; nothing but headers is read."""
        name = os.fspath(path)
        if not os.path.exists(name):
            if os.path.islink(name):
                try:
                    os.stat(name)
                except OSError as e:
                    raise InvalidImageError(f"{name}: {_os_problem(e, name)}.") from e
            raise InvalidImageError(f"{name}: file or folder not found.")
        if os.path.isdir(name):
            self._check_series(name)
            return
        if not os.path.isfile(name):
            raise InvalidImageError(f"{name}: not a regular file or folder (a device, socket or pipe).")
        try:
            with open(name, "rb") as f:
                empty = not f.read(1)
        except OSError as e:
            raise InvalidImageError(f"{name}: cannot be read ({_os_problem(e, name)}).") from e
        if empty:
            raise InvalidImageError(f"{name}: empty file (0 bytes).")
        if _named_like(name, _NIFTI_SUFFIXES):
            self._check_size(name, self._nifti_shape(name))
        elif _named_like(name, _PNG_SUFFIXES):
            self._check_size(name, self._png_shape(name))
        elif pydicom.misc.is_dicom(name):
            header = _read_dicom_header(name)
            if "Rows" in header:
                self._check_size(name, (int(header.Columns), int(header.Rows), _num_frames(header)))
                _check_dicom_pixel_data(name)

    def _check_size(self, name: str, shape: Sequence[int]) -> None:
        voxels = math.prod(int(s) for s in shape)
        if self.max_voxels is not None and voxels > self.max_voxels:
            raise InvalidImageError(
                f"{name}: image of {' x '.join(str(int(s)) for s in shape)} = {voxels:,} voxels is larger than the "
                f"limit of {self.max_voxels:,} voxels; if this is the right file, raise the limit with the bundle key "
                f"max_input_voxels (e.g. --max_input_voxels {voxels})."
            )

    @staticmethod
    def _nifti_shape(name: str) -> tuple[int, ...]:
        try:
            return tuple(nib.load(name).shape)  # the header only: nibabel loads the data on first access
        except Exception as e:
            raise InvalidImageError(f"{name}: not a readable NIfTI file ({e}).") from e

    @staticmethod
    def _png_shape(name: str) -> tuple[int, ...]:
        from PIL import Image  # imported here: only PNG inputs need it

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked by the caller
                with Image.open(name) as image:  # reads the header, decodes nothing
                    return tuple(image.size)
        except Image.DecompressionBombError as e:
            raise InvalidImageError(f"{name}: {e}") from e
        except Exception as e:
            raise InvalidImageError(f"{name}: not a readable PNG file ({e}).") from e

    def _check_series(self, folder: str) -> None:
        """Check a DICOM series folder: its files, their headers and geometry, then their pixel data."""
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            raise InvalidImageError(f"{folder}: folder cannot be read ({_os_problem(e, folder)}).") from e
        files, unreadable = [], []
        for entry in entries:
            try:
                if entry.is_dir():
                    continue  # a subfolder is a series of its own
                if pydicom.misc.is_dicom(entry.path):
                    files.append(entry.path)
            except OSError as e:  # broken link, link loop, no permission: it may be a slice
                unreadable.append((entry.path, e))
        if not files:
            kind = (
                "NIfTI" if _named_like(folder, _NIFTI_SUFFIXES) else "PNG" if _named_like(folder, _PNG_SUFFIXES) else ""
            )
            named = f" (it is named like a {kind} file but is a folder)" if kind else ""
            raise InvalidImageError(f"{folder}: folder holds no DICOM files{named}.")
        if unreadable:
            path, error = unreadable[0]
            raise InvalidImageError(
                f"{path}: cannot be read ({_os_problem(error, path)}); a slice of the DICOM series in {folder} may be "
                "missing."
            )

        headers = {f: _read_dicom_header(f) for f in files}
        series: dict[str, int] = {}
        for header in headers.values():
            uid = str(header.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))
            series[uid] = series.get(uid, 0) + 1
        if len(series) > 1:
            counts = ", ".join(f"{uid} ({n} files)" for uid, n in series.items())
            raise InvalidImageError(
                f"{folder}: folder mixes {len(series)} DICOM series: {counts}; put each series in its own folder."
            )
        # instances without pixel rows (a DICOMDIR, a report) are not slices
        images = {f: h for f, h in headers.items() if "Rows" in h and "Columns" in h}
        if not images:
            raise InvalidImageError(f"{folder}: the DICOM files hold no image (no Rows and Columns).")
        first, header = next(iter(images.items()))
        rows, columns = int(header.Rows), int(header.Columns)
        self._check_size(folder, (columns, rows, sum(_num_frames(h) for h in images.values())))
        for f, h in images.items():
            if (int(h.Rows), int(h.Columns)) != (rows, columns):
                raise InvalidImageError(
                    f"{f}: {int(h.Columns)} x {int(h.Rows)} pixels while {first} has {columns} x {rows}; the slices "
                    f"of the DICOM series in {folder} must have the same size."
                )
        self._check_instances(folder, images)
        for f in images:
            _check_dicom_pixel_data(f)

    def _check_instances(self, folder: str, images: dict[str, pydicom.Dataset]) -> None:
        """Raise on a duplicated, missing or unevenly spaced instance of a single-frame DICOM series."""
        first_of_uid: dict[str, str] = {}
        for f, h in images.items():
            uid = str(h.get("SOPInstanceUID", ""))
            if uid and uid in first_of_uid:
                raise InvalidImageError(
                    f"{f}: duplicated DICOM instance, same SOPInstanceUID {uid} as {first_of_uid[uid]}; remove one "
                    "copy."
                )
            first_of_uid.setdefault(uid, f)
        if len(images) < 2 or any(_num_frames(h) > 1 for h in images.values()):
            return  # a multi-frame instance holds its own geometry
        files = list(images)
        if all(h.get("ImagePositionPatient") and h.get("ImageOrientationPatient") for h in images.values()):
            orientation = np.asarray(images[files[0]].ImageOrientationPatient, dtype=float)
            for f in files[1:]:
                other = np.asarray(images[f].ImageOrientationPatient, dtype=float)
                if other.shape != orientation.shape or not np.allclose(other, orientation, atol=1e-3):
                    raise InvalidImageError(
                        f"{f}: slice orientation {tuple(other.round(4))} differs from {tuple(orientation.round(4))} "
                        f"of {files[0]}; the DICOM series in {folder} is not one volume."
                    )
            normal = np.cross(orientation[:3], orientation[3:])
            positions = [float(np.dot(normal, np.asarray(images[f].ImagePositionPatient, dtype=float))) for f in files]
            self._check_steps(folder, files, positions, "mm")
        elif all(h.get("InstanceNumber") is not None for h in images.values()):
            self._check_steps(folder, files, [float(images[f].InstanceNumber) for f in files], "")

    def _check_steps(self, folder: str, files: list[str], values: list[float], unit: str) -> None:
        """Check that the slice positions (``unit`` "mm") or instance numbers (``unit`` "") are evenly spaced."""
        what = "slice position" if unit else "instance number"
        order = np.argsort(values, kind="stable")
        files = [files[i] for i in order]
        values = [values[i] for i in order]
        steps = np.diff(values)
        for i, step in enumerate(steps):
            if step < _SAME_POSITION_MM:
                raise InvalidImageError(
                    f"{files[i + 1]}: duplicated DICOM instance, same {what} ({values[i]:g}{unit and ' ' + unit}) as "
                    f"{files[i]}; remove one copy, or put each acquisition in its own folder."
                )
        typical = float(np.sort(steps)[(len(steps) - 1) // 2])  # the lower median: one gap in 3 slices is found
        for i, step in enumerate(steps):
            ratio = float(step) / typical
            if abs(ratio - 1) <= self.spacing_tolerance:
                continue
            missing = round(ratio) - 1
            apart = f"{float(step):.4g}{unit and ' ' + unit} from {files[i]}, while the others are {typical:.4g}"
            if missing >= 1 and abs(ratio - round(ratio)) <= self.spacing_tolerance * round(ratio):
                raise InvalidImageError(
                    f"{files[i + 1]}: {missing} DICOM instance(s) missing before this file ({what} {apart}{unit and ' ' + unit} "
                    "apart); the series is incomplete."
                )
            raise InvalidImageError(
                f"{files[i + 1]}: non-uniform slice spacing in the DICOM series in {folder} ({what} {apart}"
                f"{unit and ' ' + unit} apart, tolerance {self.spacing_tolerance:.0%})."
            )

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                self.check(d[key])
        return d
