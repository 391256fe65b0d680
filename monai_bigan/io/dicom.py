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
DICOM series in and out, and the DICOM objects of a scored scan: a binary Segmentation (SEG) of the anomaly mask, a
Parametric Map of the heatmap and a Comprehensive 3D SR (TID 1500 Measurement Report) of the scores, written with
highdicom so that a PACS or a viewer (OHIF, 3D Slicer) shows them over the source series.

Geometry never depends on a reader's axis conventions: volumes carry a RAS affine (nibabel, MONAI MetaTensor), DICOM
instances their LPS ImagePositionPatient/ImageOrientationPatient/PixelSpacing, and :py:func:`volume_to_frames` maps
one onto the other through world coordinates.

Private codes: where neither DICOM (DCM), SNOMED CT (SCT) nor LOINC has a concept (the BiGAN's scores), the concepts
use the private coding scheme designator ``99MONAIBIGAN`` (:py:data:`CODING_SCHEME`), version ``1``:

=============  ==========================================================================
code value     meaning
=============  ==========================================================================
``score``      Anomaly score (the calibrated per-volume BiGAN score)
``residual``   Anomaly score residual component (reconstruction term)
``discrim``    Anomaly score discriminator component (feature-matching term)
``pctl``       Anomaly score percentile among healthy scans (0-100)
``threshold``  Anomaly score flag threshold
``flagged``    Anomaly flag (the score exceeds the threshold); its value is SCT Yes / No
``heatmap``    Anomaly heatmap (the quantity of the Parametric Map)
``procedure``  Unsupervised anomaly detection (the procedure reported)
``method``     BiGAN anomaly scoring (research use only) (the method of the measurements)
=============  ==========================================================================

All outputs carry the caveat "Research use only, not for diagnosis" (:py:data:`RESEARCH_CAVEAT`): in their series
description, in the content description of the SEG and the Parametric Map, in the SR's tracking identifier and its
method; the SR is UNVERIFIED and not final.
"""

from __future__ import annotations

import datetime
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.misc import is_dicom
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from .atomic import atomic_path

__all__ = [
    "CODING_SCHEME",
    "RESEARCH_CAVEAT",
    "read_series",
    "reorient_for_dicom",
    "write_dicom_series",
    "write_dataset",
    "volume_to_frames",
    "anomaly_segmentation",
    "heatmap_parametric_map",
    "score_report",
]

#: private coding scheme designator of the concepts no standard code covers (see the module documentation)
CODING_SCHEME = "99MONAIBIGAN"
#: the caveat every output carries
RESEARCH_CAVEAT = "Research use only, not for diagnosis"
# LPS (DICOM) <-> RAS (nibabel, MONAI): x and y change sign
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# an axis other than the third becomes the slice axis only when its spacing exceeds both others' by this factor
_THICK_SLICE_RATIO = 1.25
# the direction, as a nibabel (RAS) axis code, that columns, rows and slices point to along each world axis of RAS:
# columns towards patient left (or posterior), rows towards posterior (or feet), as scanners write them
_COLUMN_CODES = {0: "L", 1: "P"}
_ROW_CODES = {1: "P", 2: "I"}
# largest stored value of unsigned 16-bit pixels
_UINT16_MAX = 65535
# coordinates this close to a voxel centre are taken as on it, so coinciding grids sample exactly
_SNAP_TOLERANCE = 1e-4
# attributes highdicom reads for an SR image library entry of a cross-sectional image
_IMAGE_LIBRARY_KEYWORDS = {
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SpacingBetweenSlices",
    "SliceThickness",
}


_HIGHDICOM_LOCK = threading.RLock()


@contextmanager
def _highdicom_on_numpy2() -> Iterator[None]:
    """
    highdicom 0.22, the last release for pydicom 2, names ``np.float_``, which NumPy 2 removed, and the deprecated
    ``np.row_stack``: alias the first and silence the second while highdicom builds an object (one at a time).
    """
    with _HIGHDICOM_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*row_stack", category=DeprecationWarning)
        added = "float_" not in np.__dict__
        if added:
            np.float_ = np.float64
        try:
            yield
        finally:
            if added:
                del np.float_


def _uid_or_new(uid: str | None) -> str:
    return str(uid) if uid else generate_uid()


def write_dataset(dataset: Dataset, path: str | os.PathLike) -> Path:
    """
    Write a DICOM dataset (with its file meta information) to ``path`` atomically and return the path.

    Args:
        dataset: a pydicom or highdicom dataset.
        path: the file to write; its folder is created.

    Raises:
        OSError: when the file cannot be written, naming the problem and the path.
    """
    with atomic_path(path, suffix=".dcm") as tmp:
        # enforce_file_format (pydicom 3) / write_like_original=False (pydicom 2): a DICOM file with preamble and meta
        dataset.save_as(tmp, write_like_original=False)
    return Path(path)


def _dicom_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of DICOM files.")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom(p))


def _slice_normal(dataset: Dataset) -> np.ndarray:
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def read_series(folder: str | os.PathLike, stop_before_pixels: bool = False) -> list[Dataset]:
    """
    The instances of the DICOM series in ``folder``, sorted along the slice normal (by InstanceNumber when they have
    no ImagePositionPatient). Hidden files and files that are not DICOM are ignored.

    Args:
        folder: a folder holding the files of one series.
        stop_before_pixels: read headers only.

    Returns:
        the datasets, each with ``filename`` set to its file.

    Raises:
        ValueError: when the folder holds no DICOM file or several series, naming the folder.

    Example::

        sources = read_series("data/case_1")
        print(len(sources), sources[0].SeriesInstanceUID)
    """
    folder = Path(folder)
    files = _dicom_files(folder)
    if not files:
        raise ValueError(f"{folder}: folder holds no DICOM files.")
    datasets = [pydicom.dcmread(f, stop_before_pixels=stop_before_pixels) for f in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise ValueError(
            f"{folder}: folder mixes {len(series)} DICOM series ({', '.join(sorted(series))}); put each series in its "
            "own folder."
        )
    if all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for ds in datasets):
        normal = _slice_normal(datasets[0])
        datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))
    else:
        datasets.sort(key=lambda ds: int(ds.get("InstanceNumber") or 0))
    return datasets


def _rescale(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``volume`` as unsigned 16-bit stored values with the slope and intercept that give it back."""
    finite = volume[np.isfinite(volume)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    integral = finite.size == 0 or bool(np.all(np.floor(finite) == finite))
    if integral and high - low <= _UINT16_MAX:
        slope, intercept = 1.0, low  # integers (masks, labels, raw scanner values) are kept exactly
    else:
        # the DS strings of 16 characters are what a reader sees: compute the stored values with them
        slope = float(DSfloat((high - low) / (_UINT16_MAX - 1), auto_format=True))
        intercept = float(DSfloat(low, auto_format=True))
    stored = np.rint((np.nan_to_num(volume, nan=low, posinf=high, neginf=low) - intercept) / slope)
    return np.clip(stored, 0, _UINT16_MAX).astype(np.uint16), slope, intercept


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def reorient_for_dicom(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    ``volume`` and its RAS ``affine`` with the array axes permuted and flipped (no resampling: every voxel keeps its
    value and its world position) into the layout a scanner gives a DICOM series, so that viewers show it as
    radiologists expect: array axis 0 runs along the image columns, axis 1 down the rows, axis 2 across the slices
    (see :py:func:`write_dicom_series`).

    * The slice axis is the input's third axis, or the axis whose spacing is more than 1.25 times that of both others
      (the thick slices of a 2D acquisition, e.g. a coronal scan stored in RAS order), unless the third axis holds a
      single slice.
    * Of the two in-plane axes, the one nearest the left-right axis (else the anterior-posterior axis) runs along the
      columns towards patient left (else posterior), the other down the rows towards posterior (else the feet).
      Axial, coronal and sagittal scans thus get the ImageOrientationPatient of a scanner: ``[1,0,0,0,1,0]``,
      ``[1,0,0,0,0,-1]`` and ``[0,1,0,0,0,-1]``; an oblique scan stays oblique, near the same orientation.
    * The slices run along the normal (the cross product of the column and row directions), so the series reads
      back in the same order: the affine of the result is right-handed.

    Args:
        volume: a 3D array.
        affine: its 4x4 RAS affine (nibabel convention).

    Returns:
        the reoriented array (a view where possible) and its RAS affine.

    Raises:
        ValueError: for a volume that is not 3D or an affine that is not 4x4 and invertible.

    Example::

        img = nib.load("axial_ras.nii.gz")
        array, lps_affine = reorient_for_dicom(img.get_fdata(), img.affine)  # aff2axcodes(lps_affine): L, P, S
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=float)
    if volume.ndim != 3:
        raise ValueError(f"a DICOM series needs a 3D volume, got shape {volume.shape}.")
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"the affine must be an invertible 4x4 matrix, got {affine.tolist()}.")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    slice_axis = 2
    thickest = int(np.argmax(spacing))
    others = np.delete(spacing, thickest)
    if volume.shape[2] > 1 and thickest != 2 and spacing[thickest] > _THICK_SLICE_RATIO * float(others.max()):
        slice_axis = thickest
    # the world axis (RAS: 0 x, 1 y, 2 z) nearest each array axis
    start = io_orientation(affine)
    world = start[:, 0].astype(int)
    column_axis, row_axis = sorted((a for a in range(3) if a != slice_axis), key=lambda a: world[a])
    # the slice direction's sign is fixed below, from the handedness of the result
    slice_code = "RAS"[world[slice_axis]]
    codes = (_COLUMN_CODES[world[column_axis]], _ROW_CODES[world[row_axis]], slice_code)
    transform = ornt_transform(start, axcodes2ornt(codes))
    reoriented = apply_orientation(volume, transform)
    new_affine = affine @ inv_ornt_aff(transform, volume.shape)
    if np.linalg.det(new_affine[:3, :3]) < 0:
        # slices against the normal: readers sort along the normal, so run them along it
        flip = np.array([[0, 1], [1, 1], [2, -1]], dtype=float)
        new_affine = new_affine @ inv_ornt_aff(flip, reoriented.shape)
        reoriented = apply_orientation(reoriented, flip)
    return reoriented, new_affine


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike,
    *,
    patient_id: str = "ANON",
    patient_name: str = "ANON^ANON",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_id: str = "1",
    accession_number: str = "",
    study_description: str = "",
    series_description: str = "monai_bigan series",
    series_number: int = 1,
    modality: str = "MR",
    manufacturer: str = "monai_bigan",
    body_part: str = "BRAIN",
    overwrite: bool = False,
) -> list[Path]:
    """
    Write the 3D ``volume`` with the RAS ``affine`` (nibabel convention; any orientation, oblique, anisotropic) as a
    series of single-frame MR Image Storage instances ``IM0001.dcm, IM0002.dcm, ...`` laid out as a scanner lays out
    its series, so that viewers (OHIF, PACS workstations) show it as radiologists expect. The array is first
    reoriented by :py:func:`reorient_for_dicom`: a permutation and flips of its axes, no resampling, so every voxel
    keeps its value and its world position. Then pixel ``[row, column]`` of instance ``k + 1`` is
    ``reoriented[column, row, k]``, as MONAI's ``LoadImage`` reads it back (in that layout: compare with the input
    in world space, e.g. both through ``Orientation`` to the same axcodes).

    * Axial scans get ImageOrientationPatient ``[1,0,0,0,1,0]`` (columns towards patient left, rows towards
      posterior), coronal ones ``[1,0,0,0,0,-1]``, sagittal ones ``[0,1,0,0,0,-1]``; oblique ones stay oblique, close
      to the nearest of these.
    * The slice axis is the input's third axis, unless another axis has clearly thicker voxels (more than 1.25 times
      both others: the slices of a 2D acquisition stored in another axis order, e.g. a coronal scan in RAS order);
      instance numbers increase along the slice normal.

    Values are stored as unsigned 16-bit with RescaleSlope/RescaleIntercept (integers exactly, floats to
    ``(max - min) / 65534``); explicit VR little endian; each file written atomically.

    Args:
        volume: a 3D array (a leading channel of size 1 is dropped).
        affine: its 4x4 RAS affine.
        folder: the series folder, new or empty (see ``overwrite``); created.
        patient_id: PatientID.
        patient_name: PatientName.
        study_instance_uid: StudyInstanceUID (default: a new one).
        series_instance_uid: SeriesInstanceUID (default: a new one).
        frame_of_reference_uid: FrameOfReferenceUID (default: a new one).
        study_id: StudyID.
        accession_number: AccessionNumber.
        study_description: StudyDescription.
        series_description: SeriesDescription.
        series_number: SeriesNumber.
        modality: Modality (the instances are MR Image Storage).
        manufacturer: Manufacturer.
        body_part: BodyPartExamined (an unpaired one: Laterality is not written).
        overwrite: replace the files of an existing folder instead of refusing it.

    Returns:
        the written files in slice order (as many as the reoriented volume has slices).

    Raises:
        ValueError: for a volume that is not 3D or an affine that is not 4x4 and invertible.
        FileExistsError: when ``folder`` holds files and ``overwrite`` is False.

    Example::

        img = nib.load("scan.nii.gz")
        files = write_dicom_series(img.get_fdata(), img.affine, "out/scan_series", patient_id="P1")
    """
    folder = Path(folder)
    volume = np.asarray(volume)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    affine = np.asarray(affine, dtype=float)
    if volume.ndim != 3:
        raise ValueError(f"{folder}: a DICOM series needs a 3D volume, got shape {volume.shape}.")
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{folder}: the affine must be an invertible 4x4 matrix, got {affine.tolist()}.")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder}: folder is not empty; write the DICOM series into a new folder.")
    volume, affine = reorient_for_dicom(volume, affine)
    stored, slope, intercept = _rescale(volume.astype(np.float64))

    lps = _LPS_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_direction, column_direction = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_instance_uid = _uid_or_new(study_instance_uid)
    series_instance_uid = _uid_or_new(series_instance_uid)
    frame_of_reference_uid = _uid_or_new(frame_of_reference_uid)
    window_low, window_high = intercept + slope * float(stored.min()), intercept + slope * float(stored.max())

    files = []
    for k in range(volume.shape[2]):
        sop_instance_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_instance_uid
        # Patient, General Study
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", ""
        ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = study_instance_uid, study_id, accession_number
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = date, time, ""
        if study_description:
            ds.StudyDescription = study_description
        # General Series, Frame of Reference, General Equipment
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_instance_uid, int(series_number)
        ds.SeriesDescription, ds.SeriesDate, ds.SeriesTime = series_description, date, time
        # a body part tells validators that Laterality (type 2C, for paired structures) is not needed
        ds.PatientPosition, ds.BodyPartExamined = "HFS", body_part
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference_uid, ""
        ds.Manufacturer = manufacturer
        # General Image
        ds.InstanceNumber, ds.ContentDate, ds.ContentTime = k + 1, date, time
        ds.BurnedInAnnotation = "NO"
        # Image Plane
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_direction, *column_direction)]
        # PixelSpacing is (between rows, between columns): along the column direction first
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(spacing[2])
        # MR Image: a derived research volume, no acquisition parameters
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "3D", "", "", ""
        # Image Pixel
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = _ds(intercept), _ds(slope)
        ds.WindowCenter = _ds((window_low + window_high) / 2)
        ds.WindowWidth = _ds(max(window_high - window_low, 1.0))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        files.append(write_dataset(ds, path))
    return files


def _pixel_centres_lps(dataset: Dataset) -> np.ndarray:
    """World (LPS, mm) coordinates of the pixel centres of a single-frame instance, shape (rows, columns, 3)."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        if keyword not in dataset:
            raise ValueError(f"{getattr(dataset, 'filename', 'DICOM instance')}: no {keyword}; not an image slice.")
    position = np.asarray(dataset.ImagePositionPatient, dtype=float)
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    rows, columns = np.meshgrid(np.arange(int(dataset.Rows)), np.arange(int(dataset.Columns)), indexing="ij")
    # a step along a row (next column) follows the first direction cosines, a step down a column the second
    return (
        position
        + columns[..., None] * (orientation[:3] * column_spacing)
        + rows[..., None] * (orientation[3:] * row_spacing)
    )


def volume_to_frames(
    volume: np.ndarray, affine: np.ndarray, sources: Sequence[Dataset], order: int = 0, cval: float = 0.0
) -> np.ndarray:
    """
    Sample ``volume`` (on any grid, given by its RAS ``affine``) at the pixel centres of each single-frame instance of
    ``sources`` through world coordinates, so that the frames match the instances whatever the axis conventions of
    the reader that gave the volume. Where the grids coincide the samples are the voxels themselves (bitwise for
    ``order=0``); outside the volume they are ``cval``.

    Args:
        volume: a 3D array (a leading channel of size 1 is dropped), e.g. a MONAI MetaTensor after ``Invertd``.
        affine: its 4x4 RAS affine (``MetaTensor.affine``).
        sources: the instances to sample on (see :py:func:`read_series`).
        order: spline order of the interpolation (0 nearest, for masks; 1 linear, for maps).
        cval: value outside the volume.

    Returns:
        an array (frames, rows, columns) of the volume's type for ``order=0``, of floats otherwise.

    Raises:
        ValueError: for a volume that is not 3D or an instance without image plane attributes.

    Example::

        sources = read_series("data/case_1")
        mask = LoadImage(image_only=True)("out/case_1_mask.nii.gz")
        frames = volume_to_frames(mask, mask.affine, sources)
    """
    from scipy.ndimage import map_coordinates

    array = np.asarray(volume.detach().cpu() if hasattr(volume, "detach") else volume)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"volume_to_frames needs a 3D volume, got shape {array.shape}.")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    output_dtype = array.dtype if order == 0 else np.result_type(array.dtype, np.float32)
    inverse = np.linalg.inv(np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=float))
    frames = []
    for dataset in sources:
        world_ras = _pixel_centres_lps(dataset) * np.array([-1.0, -1.0, 1.0])
        voxels = world_ras @ inverse[:3, :3].T + inverse[:3, 3]
        # rounding of DS strings and of the affine must not move a sample off a coinciding voxel centre
        nearest = np.rint(voxels)
        voxels = np.where(np.abs(voxels - nearest) < _SNAP_TOLERANCE, nearest, voxels)
        samples = map_coordinates(
            array, voxels.reshape(-1, 3).T, order=order, mode="constant", cval=cval, output=output_dtype
        )
        frames.append(samples.reshape(voxels.shape[:2]))
    return np.stack(frames)


def _coding_schemes() -> list:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return [
        CodingSchemeIdentificationItem(
            designator=CODING_SCHEME, name="monai_bigan anomaly detection concepts", version="1"
        )
    ]


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=CODING_SCHEME, meaning=meaning, scheme_version="1")


def _check_frames(frames: np.ndarray, sources: Sequence[Dataset], what: str) -> np.ndarray:
    frames = np.asarray(frames)
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns)) if sources else None
    if expected is None or frames.shape != expected:
        raise ValueError(f"{what}: frames of shape {frames.shape} do not match the {len(sources)} source instances.")
    return frames


def anomaly_segmentation(
    mask_frames: np.ndarray,
    sources: Sequence[Dataset],
    *,
    model_name: str,
    model_version: str,
    series_number: int = 901,
    series_description: str = f"Anomaly mask - CAUTION: {RESEARCH_CAVEAT}",
    manufacturer: str = "monai_bigan",
    display_lab: tuple[float, float, float] = (53.24, 80.09, 67.20),
) -> Any:
    """
    A BINARY DICOM Segmentation of the anomaly mask over the source series: one segment "anomaly" (Morphologically
    abnormal structure), AUTOMATIC, identified by an AlgorithmIdentificationSequence (monai_bigan, ``model_version``,
    Artificial Intelligence), shown red (recommended display CIELab). An empty mask gives a valid SEG with its (empty)
    frames kept.

    Args:
        mask_frames: (frames, rows, columns) of 0/1, one frame per source instance (see :py:func:`volume_to_frames`).
        sources: the source instances, in the order of the frames.
        model_name: the model, for the Manufacturer Model Name and the algorithm parameters.
        model_version: its version.
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        manufacturer: Manufacturer.
        display_lab: recommended display colour, CIELab (default: red).

    Returns:
        a ``highdicom.seg.Segmentation`` in the study of the sources.

    Raises:
        ValueError: when the frames do not match the sources.

    Example::

        seg = anomaly_segmentation(frames, read_series("data/case_1"), model_name="BiGAN", model_version="0.7.0")
        write_dataset(seg, "out/case_1_seg.dcm")
    """
    from highdicom import AlgorithmIdentificationSequence
    from highdicom.color import CIELabColor
    from highdicom.seg import Segmentation, SegmentDescription
    from pydicom.sr.codedict import codes

    mask = _check_frames(mask_frames, sources, "anomaly segmentation") > 0
    algorithm = AlgorithmIdentificationSequence(
        name="monai_bigan",
        family=codes.cid7162.ArtificialIntelligence,
        version=str(model_version),
        parameters={"model": str(model_name)},
    )
    segment = SegmentDescription(
        segment_number=1,
        segment_label="anomaly",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm,
        tracking_uid=generate_uid(),
        tracking_id="anomaly",
    )
    segment.RecommendedDisplayCIELabValue = list(CIELabColor(*display_lab).value)
    with _highdicom_on_numpy2():
        return Segmentation(
            source_images=list(sources),
            pixel_array=mask.astype(np.uint8),
            segmentation_type="BINARY",
            segment_descriptions=[segment],
            series_instance_uid=generate_uid(),
            series_number=int(series_number),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=str(model_name)[:64],
            software_versions=str(model_version),
            device_serial_number="0",
            content_description=RESEARCH_CAVEAT,
            content_label="ANOMALY",
            # an all-empty mask keeps its frames: a SEG without frames is not valid
            omit_empty_frames=bool(mask.any()),
            series_description=series_description,
            coding_schemes=_coding_schemes(),
        )


def heatmap_parametric_map(
    heatmap_frames: np.ndarray,
    sources: Sequence[Dataset],
    *,
    heatmap_label: str,
    model_name: str = "monai_bigan BiGAN",
    model_version: str = "",
    series_number: int = 902,
    series_description: str = f"Anomaly heatmap - CAUTION: {RESEARCH_CAVEAT}",
    manufacturer: str = "monai_bigan",
    body_part: str = "BRAIN",
) -> Any:
    """
    A float32 Parametric Map of the heatmap over the source series, whose Real World Value Mapping says what a value
    means (``heatmap_label``, unit UCUM "1": no units) and whose window spans its values.

    Args:
        heatmap_frames: (frames, rows, columns), one frame per source instance (see :py:func:`volume_to_frames`).
        sources: the source instances, in the order of the frames.
        heatmap_label: what the values are (``ScoringSettings.heatmap_label``), e.g. "normalized residual (healthy z)".
        model_name: the model, for the Manufacturer Model Name.
        model_version: its version (Software Versions).
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        manufacturer: Manufacturer.
        body_part: BodyPartExamined when the sources have none.

    Returns:
        a ``highdicom.pm.ParametricMap`` in the study of the sources.

    Raises:
        ValueError: when the frames do not match the sources.

    Example::

        pmap = heatmap_parametric_map(frames, sources, heatmap_label="normalized residual (healthy z)")
        write_dataset(pmap, "out/case_1_pmap.dcm")
    """
    from highdicom.pm import ParametricMap, RealWorldValueMapping
    from pydicom.sr.codedict import codes

    heatmap = np.nan_to_num(_check_frames(heatmap_frames, sources, "heatmap parametric map").astype(np.float32))
    low, high = float(heatmap.min()), float(heatmap.max())
    mapping = RealWorldValueMapping(
        lut_label="anomaly heatmap",
        lut_explanation=str(heatmap_label)[:64],
        unit=codes.UCUM.NoUnits,
        value_range=(low, high if high > low else low + 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=_code("heatmap", "Anomaly heatmap"),
    )
    with _highdicom_on_numpy2():
        pmap = ParametricMap(
            source_images=list(sources),
            pixel_array=heatmap,
            series_instance_uid=generate_uid(),
            series_number=int(series_number),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=str(model_name)[:64],
            software_versions=str(model_version) or "unknown",
            device_serial_number="0",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            window_center=(low + high) / 2,
            window_width=max(high - low, 1e-6),
            content_description=RESEARCH_CAVEAT,
            content_label="HEATMAP",
            series_description=series_description,
            coding_schemes=_coding_schemes(),
        )
    return _body_part(pmap, sources, body_part)


def _body_part(dataset: Dataset, sources: Sequence[Dataset], body_part: str) -> Dataset:
    """
    Set the body part (and laterality) of the sources on ``dataset``, ``body_part`` when they have none: validators
    require Laterality (General Series, type 2C) unless the body part is known to be unpaired.
    """
    dataset.BodyPartExamined = str(sources[0].get("BodyPartExamined") or body_part)
    if sources[0].get("Laterality"):
        dataset.Laterality = sources[0].Laterality
    return dataset


def _value(result: Mapping, key: str) -> float | None:
    value = result.get(key)
    if value is None:
        return None
    value = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=float)
    return float(value.reshape(-1)[0]) if value.size else None


def score_report(
    result: Mapping,
    sources: Sequence[Dataset],
    *,
    segmentation: Dataset | None = None,
    model_name: str,
    model_version: str,
    series_number: int = 903,
    series_description: str = f"Anomaly scores - CAUTION: {RESEARCH_CAVEAT}",
    manufacturer: str = "monai_bigan",
) -> Any:
    """
    A Comprehensive 3D SR holding a TID 1500 Measurement Report of the scan's scores: the anomaly score and its
    components (``score_residual``, ``score_discriminator``), its ``percentile`` among healthy scans, the
    ``threshold`` and the flag (a qualitative evaluation, SCT Yes/No), by the device ``model_name`` (observer context)
    and the algorithm ``model_name`` ``model_version``; it references the source images (as evidence, and in an
    image library when they all have the plane geometry highdicom needs for it) and, when given, the segment "anomaly" of ``segmentation`` (TID 1411) instead of the images alone (TID 1501). The document is
    complete, not final, UNVERIFIED, and says "Research use only, not for diagnosis" in its series description, its
    tracking identifier and its method. Concepts without a standard code use :py:data:`CODING_SCHEME`.

    Args:
        result: the scan's results: ``score`` (required), ``score_residual``, ``score_discriminator``, ``percentile``,
            ``threshold``, ``flagged`` (absent or None ones are left out); numbers, arrays or tensors.
        sources: the source instances.
        segmentation: the anomaly SEG of the scan (see :py:func:`anomaly_segmentation`), or None.
        model_name: the model (device observer name, algorithm name).
        model_version: its version.
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        manufacturer: Manufacturer.

    Returns:
        a ``highdicom.sr.Comprehensive3DSR`` in the study of the sources.

    Raises:
        ValueError: when ``result`` has no score or there are no sources.

    Example::

        sr = score_report({"score": 3.2, "percentile": 99.0, "flagged": True}, sources, segmentation=seg,
                          model_name="monai_bigan BiGAN", model_version="0.7.0")
        write_dataset(sr, "out/case_1_sr.dcm")
    """
    import highdicom.sr as hsr
    from pydicom.sr.codedict import codes

    score = _value(result, "score")
    if score is None:
        raise ValueError("score report: the result has no 'score'.")
    if not sources:
        raise ValueError("score report: no source instances to reference.")
    algorithm = hsr.AlgorithmIdentification(name=str(model_name), version=str(model_version))
    measured = [
        ("score", "score", "Anomaly score", codes.UCUM.NoUnits),
        ("score_residual", "residual", "Anomaly score residual component", codes.UCUM.NoUnits),
        ("score_discriminator", "discrim", "Anomaly score discriminator component", codes.UCUM.NoUnits),
        ("percentile", "pctl", "Anomaly score percentile among healthy scans", codes.UCUM.Percent),
        ("threshold", "threshold", "Anomaly score flag threshold", codes.UCUM.NoUnits),
    ]
    measurements = [
        hsr.Measurement(name=_code(code, meaning), value=value, unit=unit, algorithm_id=algorithm)
        for key, code, meaning, unit in measured
        if (value := _value(result, key)) is not None
    ]
    flagged = _value(result, "flagged")
    evaluations = (
        []
        if flagged is None
        else [
            hsr.QualitativeEvaluation(
                name=_code("flagged", "Anomaly flag"), value=codes.SCT.Yes if flagged else codes.SCT.No
            )
        ]
    )
    group = {
        "tracking_identifier": hsr.TrackingIdentifier(uid=generate_uid(), identifier=f"anomaly - {RESEARCH_CAVEAT}"),
        "finding_type": codes.SCT.MorphologicallyAbnormalStructure,
        "method": _code("method", "BiGAN anomaly scoring (research use only)"),
        "algorithm_id": algorithm,
        "measurements": measurements,
        "qualitative_evaluations": evaluations,
    }
    if segmentation is not None:
        roi = hsr.ReferencedSegment.from_segmentation(segmentation, segment_number=1)
        imaging = hsr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=roi, **group)
    else:
        images = [hsr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources]
        imaging = hsr.MeasurementsAndQualitativeEvaluations(source_images=images, **group)
    device = hsr.DeviceObserverIdentifyingAttributes(
        # the same model gets the same observer UID in every report
        uid=generate_uid(entropy_srcs=["monai_bigan", str(model_name), str(model_version)]),
        name=str(model_name)[:64],
        manufacturer_name=manufacturer,
        model_name=f"{model_name} {model_version}"[:64],
    )
    context = hsr.ObservationContext(
        observer_device_context=hsr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hsr.MeasurementReport(
        observation_context=context,
        procedure_reported=_code("procedure", "Unsupervised anomaly detection"),
        imaging_measurements=[imaging],
        # highdicom's image library entries need the full plane geometry, which many scanners' series lack
        referenced_images=list(sources) if all(_IMAGE_LIBRARY_KEYWORDS <= set(ds.dir()) for ds in sources) else None,
    )
    evidence = list(sources) + ([segmentation] if segmentation is not None else [])
    with _highdicom_on_numpy2():
        return hsr.Comprehensive3DSR(
            evidence=evidence,
            content=report,
            series_instance_uid=generate_uid(),
            series_number=int(series_number),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=manufacturer,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=series_description,
            coding_schemes=_coding_schemes(),
        )
