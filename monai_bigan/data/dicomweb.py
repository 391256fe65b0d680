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
Scoring from and to a PACS through DICOMweb (QIDO-RS, WADO-RS, STOW-RS; dicomweb-client), and a local Orthanc to try it.

- :py:func:`dicomweb_datalist` lists the series of a DICOMweb server (QIDO-RS), downloads each into a cache folder
  (WADO-RS; a complete folder is reused, so a rerun downloads nothing) and returns datalist items; a series that
  cannot be fetched becomes an item holding its error, which the run reports as one error row.
- :py:func:`upload` stores DICOM files on a server (STOW-RS) and returns their SOP Instance UIDs.
- :py:func:`inference_inputs` is the ``datalist`` of the inference bundle: a folder of files, or the series of a
  DICOMweb server cached under ``<output_dir>/.dicomweb_cache``.
- :py:func:`orthanc_config` writes the configuration of a local Orthanc with its DICOMweb plugin.

Command line::

    python -m monai_bigan.data.dicomweb orthanc-config --storage /data/orthanc > orthanc.json
    Orthanc orthanc.json &
    python -m monai_bigan.data.dicomweb upload --url http://127.0.0.1:8042/dicom-web scans/case_1.nii.gz dicom/
    python -m monai_bigan.data.dicomweb list --url http://127.0.0.1:8042/dicom-web
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from monai.utils import optional_import
from pydicom.errors import InvalidDicomError

from .guarded import ERROR_KEY
from .inputs import inference_datalist

if TYPE_CHECKING:
    import requests
    from dicomweb_client.api import DICOMwebClient
else:
    requests, _ = optional_import("requests")
    DICOMwebClient, _HAS_DICOMWEB_CLIENT = optional_import("dicomweb_client.api", name="DICOMwebClient")

__all__ = [
    "CACHE_DIRNAME",
    "DEFAULT_ORTHANC_PLUGIN",
    "NON_IMAGE_MODALITIES",
    "DICOMwebError",
    "dicomweb_datalist",
    "inference_inputs",
    "list_series",
    "orthanc_config",
    "upload",
    "main",
]

logger = logging.getLogger(__name__)

#: folder of ``output_dir`` where :py:func:`inference_inputs` caches the series it downloads
CACHE_DIRNAME = ".dicomweb_cache"
#: the DICOMweb plugin of Debian/Ubuntu's ``orthanc-dicomweb`` package
DEFAULT_ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: series modalities that hold no scan (segmentations, reports, ...): not downloaded unless asked for by UID
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "PR", "KO", "DOC", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PLAN", "FID", "RWV"}
)
#: instances sent by one STOW-RS request
STOW_BATCH_SIZE = 32
#: NIfTI intensities spanning less than this (normalised floats) are sent as 0-4095 by ``upload``
SMALL_INTENSITY_RANGE = 100.0
#: seconds to wait for a server to accept a connection
CONNECT_TIMEOUT = 10.0


class DICOMwebError(RuntimeError):
    """A DICOMweb server that cannot be reached, or that refuses a request; the message names the server and says why."""


def orthanc_config(
    storage_dir: str | os.PathLike,
    http_port: int = 8042,
    dicom_port: int = 4242,
    plugins: Sequence[str | os.PathLike] = (DEFAULT_ORTHANC_PLUGIN,),
    dicom_server: bool = True,
) -> dict[str, Any]:
    """
    The configuration of a local Orthanc serving DICOMweb at ``http://127.0.0.1:<http_port>/dicom-web/``: storage and
    index in ``storage_dir``, the DICOMweb plugin, no authentication and no remote access (Orthanc then accepts
    connections from this computer only).

    Args:
        storage_dir: folder of Orthanc's files and database (created by Orthanc).
        http_port: port of the REST and DICOMweb API.
        dicom_port: port of the DICOM (DIMSE) server.
        plugins: plugin files or folders to load; the DICOMweb plugin is needed.
        dicom_server: whether Orthanc also listens for DICOM (DIMSE) associations on ``dicom_port``, e.g. from
            scanners; False leaves DICOMweb only (the tests: Orthanc has no option to bind the DICOM port to one
            address, and by default it accepts C-STORE from any modality).

    Example::

        json.dump(orthanc_config("/data/orthanc"), open("orthanc.json", "w"))   # then: Orthanc orthanc.json
    """
    storage = str(Path(storage_dir).expanduser().absolute())
    for name, port in (("http_port", http_port), ("dicom_port", dicom_port)):
        if not 0 < int(port) < 65536:
            raise ValueError(f"{name} must be a TCP port (1-65535), got {port!r}.")
    return {
        "Name": "monai_bigan",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "HttpPort": int(http_port),
        "DicomPort": int(dicom_port),
        "DicomServerEnabled": bool(dicom_server),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(p) for p in plugins],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }


# ---------------------------------------------------------------------------------------------------- connection
def _answer(response: Any) -> str:
    """``HTTP <status> <reason>: <text>`` of a server's answer, the text cut to one readable line."""
    if response is None:
        return "no answer"
    text = " ".join((response.text or "").split())
    text = f": {text[:300]}" if text else ""
    return f"HTTP {response.status_code} {response.reason}{text}"


def _connect(url: str) -> DICOMwebClient:
    """
    A client of the DICOMweb server ``url`` that answered a QIDO-RS request.

    Raises:
        DICOMwebError: the server cannot be reached, or ``url`` is not a DICOMweb root.
    """
    if not _HAS_DICOMWEB_CLIENT:
        raise ImportError("DICOMweb needs dicomweb-client: pip install 'dicomweb-client>=0.59.1'.")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not a DICOMweb URL (e.g. http://127.0.0.1:8042/dicom-web).")
    try:
        # a plain request first: the client retries a refused connection for half a minute before it fails
        response = requests.get(f"{url}/studies", params={"limit": 1}, timeout=CONNECT_TIMEOUT)
    except requests.exceptions.RequestException as e:
        reason = type(e).__name__ if isinstance(e, requests.exceptions.Timeout) else "connection refused or no route"
        raise DICOMwebError(
            f"cannot reach the DICOMweb server {url} ({reason}): is the PACS running, and is the URL its DICOMweb root "
            "(e.g. http://127.0.0.1:8042/dicom-web for Orthanc)?"
        ) from None
    if not response.ok:
        raise DICOMwebError(
            f"{url} is not a DICOMweb root that answers QIDO-RS ({_answer(response)}); for Orthanc use "
            "http://HOST:8042/dicom-web."
        )
    return DICOMwebClient(url=url)


def _dataset(attributes: dict) -> pydicom.Dataset:
    return pydicom.Dataset.from_json(attributes)


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value) if value is not None else ""


def _is_image_class(sop_class_uid: str) -> bool:
    """Whether a SOP class holds images (``... Image Storage``); an unknown class is given the benefit of the doubt."""
    name = pydicom.uid.UID(sop_class_uid).name
    return name == sop_class_uid or "Image Storage" in name


def _http_error(e: Exception, what: str, url: str) -> str:
    if isinstance(e, requests.exceptions.HTTPError):
        return f"{url} refused {what} ({_answer(e.response)})"
    return f"{what} from {url} failed ({type(e).__name__}: {e})"


# ---------------------------------------------------------------------------------------------------- QIDO-RS
_SERIES_FIELDS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PatientID",
    "StudyDate",
]


def _series_rows(found: Iterable[dict]) -> list[dict[str, str]]:
    rows = []
    for attributes in found:
        ds = _dataset(attributes)
        rows.append(
            {
                "patient": _text(ds, "PatientID"),
                "study": _text(ds, "StudyInstanceUID"),
                "date": _text(ds, "StudyDate"),
                "series": _text(ds, "SeriesInstanceUID"),
                "modality": _text(ds, "Modality"),
                "number": _text(ds, "SeriesNumber"),
                "instances": _text(ds, "NumberOfSeriesRelatedInstances"),
                "description": _text(ds, "SeriesDescription"),
            }
        )
    return rows


def list_series(url: str, studies: Sequence[str] | None = None) -> list[dict[str, str]]:
    """
    The series of a DICOMweb server (QIDO-RS), of the given studies or of all: one dict per series with ``patient``,
    ``study``, ``date``, ``series``, ``modality``, ``number``, ``instances`` and ``description``.

    Raises:
        DICOMwebError: the server cannot be reached or refuses the query.
    """
    client = _connect(url)
    rows = []
    for study in studies or [None]:
        try:
            found = client.search_for_series(study_instance_uid=study, fields=_SERIES_FIELDS, get_remaining=True)
        except requests.exceptions.RequestException as e:
            raise DICOMwebError(_http_error(e, f"the series query of study {study}" if study else "QIDO-RS", url))
        for row in _series_rows(found):
            row["study"] = row["study"] or (study or "")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- WADO-RS
def _instances(client: DICOMwebClient, study: str, series: str) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of every instance of a series (QIDO-RS)."""
    found = client.search_for_instances(
        study_instance_uid=study, series_instance_uid=series, fields=["SOPClassUID"], get_remaining=True
    )
    instances = {}
    for attributes in found:
        ds = _dataset(attributes)
        instances[_text(ds, "SOPInstanceUID")] = _text(ds, "SOPClassUID")
    return instances


def _is_cached(folder: Path, instances: dict[str, str]) -> bool:
    """Whether ``folder`` holds exactly the instances the server lists (a series that grew is fetched again)."""
    if not folder.is_dir():
        return False
    return {p.name for p in folder.iterdir() if p.suffix == ".dcm"} == {f"{uid}.dcm" for uid in instances}


def _download(client: DICOMwebClient, study: str, series: str, folder: Path, instances: dict[str, str]) -> None:
    """
    Fetch a series (WADO-RS) into a temporary folder beside ``folder``, then rename it: ``folder`` exists only complete.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        received = set()
        for ds in client.iter_series(study_instance_uid=study, series_instance_uid=series):
            uid = str(ds.SOPInstanceUID)
            ds.save_as(partial / f"{uid}.dcm", write_like_original=False)
            received.add(uid)
        missing = set(instances) - received
        if missing:
            raise DICOMwebError(f"{len(missing)} of its {len(instances)} instances were not sent (e.g. {min(missing)})")
        if folder.exists():  # an outdated copy: the server holds other instances now
            shutil.rmtree(folder)
        os.rename(partial, folder)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def _uids(value: str | Sequence[str] | None) -> list[str]:
    """UIDs from a list, or from one string of UIDs separated by commas or spaces (as a command line gives them)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return [str(v).strip() for v in value if str(v).strip()]


def dicomweb_datalist(
    url: str,
    cache_dir: str | os.PathLike,
    studies: str | Sequence[str] | None = None,
    series: str | Sequence[str] | None = None,
    image_key: str = "image",
) -> list[dict[str, str]]:
    """
    Datalist items of the series of a DICOMweb server, each downloaded into ``<cache_dir>/<study>/<series>/``.

    The series of ``studies`` (all the server's series when none is given) are listed with QIDO-RS, those of
    ``series`` only when it is given, and each is fetched with WADO-RS into a temporary folder renamed when complete:
    a folder that already holds the instances the server lists is reused, so a rerun downloads nothing. Series whose
    modality holds no scan (:py:data:`NON_IMAGE_MODALITIES`, e.g. the SEG and SR that a run sent back) or whose
    instances are not images (e.g. a Parametric Map) are skipped with a log line, unless ``series`` asks for them.

    A study or series that cannot be fetched (not on the server, no instances, not images, an HTTP error) becomes an
    item ``{image_key: <its cache folder>, "study": ..., "series": ..., "error": message}``:
    :py:class:`monai_bigan.data.GuardedDataset` makes it one error row naming the series and the cause, and the other
    series are scored.

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        cache_dir: folder of the downloaded series (never an input folder).
        studies: Study Instance UIDs (a list, or one string separated by commas or spaces).
        series: Series Instance UIDs to score (within ``studies`` when given).
        image_key: key of the series folder in the items.

    Returns:
        one item per series, ``{image_key: folder, "study": StudyInstanceUID, "series": SeriesInstanceUID}``.

    Raises:
        DICOMwebError: the server cannot be reached, or refuses to list its series, before anything is downloaded.
        ValueError: the server holds no series to score.

    Example::

        items = dicomweb_datalist("http://127.0.0.1:8042/dicom-web", "out/.dicomweb_cache", studies=["1.2.3"])
        items[0]  # {"image": "out/.dicomweb_cache/1.2.3/1.2.3.4", "study": "1.2.3", "series": "1.2.3.4"}
    """
    url = url.rstrip("/")
    cache = Path(cache_dir).expanduser().absolute()
    study_uids, series_uids = _uids(studies), _uids(series)
    client = _connect(url)

    items: list[dict[str, str]] = []

    def failed(study: str, series_uid: str, cause: str) -> None:
        folder = cache / study / series_uid if series_uid else cache / study
        what = f"series {series_uid} of study {study}" if series_uid else f"study {study}"
        message = f"{folder}: DICOMweb {what} from {url}: {cause}"
        logger.error(message)
        items.append({image_key: str(folder), "study": study, "series": series_uid, ERROR_KEY: message})

    # ---- the series to fetch, from QIDO-RS
    listed: list[dict[str, str]] = []
    queries: list[tuple[str | None, dict | None]] = (
        [(study, None) for study in study_uids]
        if study_uids
        else [(None, {"SeriesInstanceUID": uid}) for uid in series_uids] or [(None, None)]
    )
    for study, search_filters in queries:
        try:
            found = _series_rows(
                client.search_for_series(
                    study_instance_uid=study, fields=_SERIES_FIELDS, search_filters=search_filters, get_remaining=True
                )
            )
        except requests.exceptions.RequestException as e:
            if study is None and search_filters is None:  # the whole listing failed: nothing can be scored
                raise DICOMwebError(_http_error(e, "the series query (QIDO-RS)", url)) from None
            target = study or search_filters["SeriesInstanceUID"]  # type: ignore[index]
            failed(study or "unknown-study", "" if study else target, _http_error(e, "the query", url))
            continue
        for row in found:
            row["study"] = row["study"] or (study or "")
        if study and not found:
            failed(study, "", "not found on the server (no series)")
        listed += found
    if series_uids:
        present = {row["series"] for row in listed}
        for uid in series_uids:
            if uid not in present and not any(item["series"] == uid for item in items):
                where = f"in studies {', '.join(study_uids)}" if study_uids else "on the server"
                failed(study_uids[0] if len(study_uids) == 1 else "unknown-study", uid, f"not found {where}")
        listed = [row for row in listed if row["series"] in series_uids]

    # ---- fetch each series (or reuse its cache)
    downloaded = reused = 0
    for row in sorted(listed, key=lambda r: (r["study"], r["series"])):
        study, series_uid, modality = row["study"], row["series"], row["modality"].upper()
        wanted = bool(series_uids)
        if modality in NON_IMAGE_MODALITIES and not wanted:
            logger.info(f"skipped {modality} series {series_uid} of study {study}: it holds no scan.")
            continue
        if modality in NON_IMAGE_MODALITIES:
            failed(study, series_uid, f"not an image series (modality {modality})")
            continue
        folder = cache / study / series_uid
        try:
            instances = _instances(client, study, series_uid)
            if not instances:
                failed(study, series_uid, "the series has no instances")
                continue
            classes = {pydicom.uid.UID(c).name for c in instances.values() if not _is_image_class(c)}
            if len(classes) == len(set(instances.values())):  # not one image instance
                if not wanted:
                    logger.info(
                        f"skipped series {series_uid} of study {study}: it holds no image ({', '.join(classes)})."
                    )
                    continue
                failed(study, series_uid, f"not an image series ({', '.join(sorted(classes))})")
                continue
            if _is_cached(folder, instances):
                reused += 1
            else:
                _download(client, study, series_uid, folder, instances)
                downloaded += 1
        except (requests.exceptions.RequestException, DICOMwebError, OSError, InvalidDicomError) as e:
            cause = str(e) if isinstance(e, DICOMwebError) else _http_error(e, "the download (WADO-RS)", url)
            failed(study, series_uid, cause)
            continue
        items.append({image_key: str(folder), "study": study, "series": series_uid})
    if not items:
        raise ValueError(
            f"no series to score on {url}" + (f" in studies {', '.join(study_uids)}." if study_uids else ".")
        )
    logger.info(
        f"DICOMweb {url}: {len(items)} series ({downloaded} downloaded, {reused} already in {cache}, "
        f"{sum(ERROR_KEY in i for i in items)} failed)."
    )
    return items


def inference_inputs(
    dataset_dir: str | os.PathLike | None,
    split: str = "test",
    output_dir: str | os.PathLike | None = None,
    dicomweb_url: str | None = None,
    studies: str | Sequence[str] | None = None,
    series: str | Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """
    The inputs of the inference bundle: the files of ``dataset_dir`` (see
    :py:func:`monai_bigan.data.inference_datalist`) when ``dicomweb_url`` is None, else the series of that DICOMweb
    server (see :py:func:`dicomweb_datalist`), cached under ``<output_dir>/.dicomweb_cache``. The cache lies in the
    output folder, whose batch manifest keeps it out of any later folder listing.

    Args:
        dataset_dir: the data set folder, or a plain folder of scans (unused with ``dicomweb_url``).
        split: the datalist split to score.
        output_dir: the output folder of the run (required with ``dicomweb_url``).
        dicomweb_url: the DICOMweb root of a PACS, e.g. ``http://127.0.0.1:8042/dicom-web``; None or "" for files.
        studies: Study Instance UIDs to score (all when empty).
        series: Series Instance UIDs to score (all the series of ``studies`` when empty).

    Raises:
        ValueError: studies or series without a ``dicomweb_url``, or a ``dicomweb_url`` without an ``output_dir``.
    """
    if not dicomweb_url:
        if _uids(studies) or _uids(series):
            raise ValueError("dicomweb_studies and dicomweb_series select series of a PACS: set --dicomweb_url too.")
        if dataset_dir is None:
            raise ValueError("set --dataset_dir (a folder of scans) or --dicomweb_url (a PACS).")
        return inference_datalist(dataset_dir, split, output_dir)
    if output_dir is None:
        raise ValueError("scoring from a PACS needs an --output_dir, where the downloaded series are cached.")
    return dicomweb_datalist(str(dicomweb_url), Path(output_dir) / CACHE_DIRNAME, studies, series)


# ---------------------------------------------------------------------------------------------------- STOW-RS
def _dicom_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The DICOM files of ``paths``: files as given, the DICOM files inside folders (recursively)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith(".") and pydicom.misc.is_dicom(str(p))
            ]
            if not found:
                raise ValueError(f"{path}: the folder holds no DICOM file.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: file or folder not found.")
    return files


def _read(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable DICOM file ({e}).") from e


def _store(client: DICOMwebClient, url: str, files: Sequence[Path]) -> list[str]:
    """STOW-RS ``files`` in one request; on a refused request, file by file so that the error names the file."""
    datasets = [_read(f) for f in files]
    try:
        answer = client.store_instances(datasets)
    except requests.exceptions.RequestException as e:
        if len(files) > 1 and isinstance(e, requests.exceptions.HTTPError):
            return [uid for f in files for uid in _store(client, url, [f])]
        what = f"{files[0]}" if len(files) == 1 else f"{len(files)} files ({files[0]}, ...)"
        raise DICOMwebError(_http_error(e, f"to store {what}", url)) from None
    by_uid = {str(ds.SOPInstanceUID): f for ds, f in zip(datasets, files)}
    failures = [
        f"{by_uid.get(str(item.get('ReferencedSOPInstanceUID', '')), item.get('ReferencedSOPInstanceUID', '?'))} "
        f"(failure reason {int(item.get('FailureReason', 0)):#06x})"
        for item in answer.get("FailedSOPSequence", [])
    ]
    if failures:
        raise DICOMwebError(f"{url} did not store {', '.join(failures)}.")
    stored = [str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence", [])]
    return stored or list(by_uid)


def upload(url: str, paths: Iterable[str | os.PathLike], batch_size: int = STOW_BATCH_SIZE) -> list[str]:
    """
    Store DICOM files on a DICOMweb server (STOW-RS): files as given, and the DICOM files inside folders.

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        paths: DICOM files and folders of them.
        batch_size: instances sent per request.

    Returns:
        the SOP Instance UIDs the server stored, in the order of the files.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file is not DICOM, or a folder holds none; nothing is sent then.
        DICOMwebError: the server cannot be reached or refuses a file (the message names it and the server's answer).

    Example::

        upload("http://127.0.0.1:8042/dicom-web", ["out/case_1_seg.dcm", "dicom/series_7"])
    """
    files = _dicom_files(paths)
    if not files:
        raise ValueError("nothing to upload: no DICOM file given.")
    for f in files:  # every file is checked before anything is sent
        if not pydicom.misc.is_dicom(str(f)):
            _read(f)
    client = _connect(url)
    stored: list[str] = []
    for start in range(0, len(files), max(1, int(batch_size))):
        stored += _store(client, url.rstrip("/"), files[start : start + max(1, int(batch_size))])
    return stored


# ---------------------------------------------------------------------------------------------------- command line
def _nifti_to_dicom(path: Path, folder: Path) -> list[Path]:
    """Write the NIfTI volume ``path`` as a DICOM series into ``folder`` (monai_bigan.io.dicom.write_dicom_series)."""
    import nibabel as nib

    try:
        from monai_bigan.io.dicom import write_dicom_series
    except ImportError as e:
        raise ImportError(f"{path}: converting NIfTI to DICOM needs monai_bigan.io.dicom.write_dicom_series ({e}).")
    image = nib.load(str(path))
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    volume = image.get_fdata(dtype="float32")
    finite = volume[np.isfinite(volume)]
    span = float(np.ptp(finite)) if finite.size else 0.0
    if 0 < span < SMALL_INTENSITY_RANGE and not np.all(np.floor(finite) == finite):
        # viewers (OHIF) round window settings to integers, so intensities normalised to e.g. [0, 1] show as white:
        # send them as 12-bit values, as MR scanners store them (the bundle normalises intensities when scoring)
        volume = (volume - float(finite.min())) * (4095.0 / span)
        logger.info(f"{path}: intensities in a range of {span:.3g} stored as 0-4095 for viewers.")
    return list(
        write_dicom_series(
            volume,
            image.affine,
            folder / stem,
            patient_id=stem,
            series_description=f"{stem} (monai_bigan upload)",
        )
    )


def _cli_upload(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    with tempfile.TemporaryDirectory(prefix="monai_bigan_upload_") as tmp:
        files: list[Path] = []
        for path in paths:
            if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
                files += _nifti_to_dicom(path, Path(tmp))
            else:
                files.append(path)
        uids = upload(args.url, files)
    print(f"stored {len(uids)} instances on {args.url}")
    return 0


def _cli_list(args: argparse.Namespace) -> int:
    rows = list_series(args.url, _uids(args.studies) or None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("patient", "study", "series", "modality", "instances", "description")
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in columns))
    print(f"{len(rows)} series on {args.url}")
    return 0


def _cli_orthanc_config(args: argparse.Namespace) -> int:
    plugins = args.plugin or [DEFAULT_ORTHANC_PLUGIN]
    missing = [p for p in plugins if not os.path.exists(p)]
    if missing:
        print(f"warning: plugin {missing[0]} not found; pass --plugin PATH of libOrthancDicomWeb.so", file=sys.stderr)
    config = orthanc_config(args.storage, args.http_port, args.dicom_port, plugins, dicom_server=not args.no_dicom)
    print(json.dumps(config, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m monai_bigan.data.dicomweb`` command line (``--help`` for its subcommands)."""
    parser = argparse.ArgumentParser(
        prog="python -m monai_bigan.data.dicomweb",
        description="Send scans to a DICOMweb server (PACS), list its series, or configure a local Orthanc.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("upload", help="STOW-RS DICOM files or folders; NIfTI files are converted first")
    sub.add_argument("--url", required=True, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    sub.add_argument("paths", nargs="+", help="DICOM files, folders of DICOM files, NIfTI files")
    sub.set_defaults(run=_cli_upload)
    sub = commands.add_parser("list", help="QIDO-RS: the studies and series of the server")
    sub.add_argument("--url", required=True, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    sub.add_argument("--studies", nargs="*", default=None, help="Study Instance UIDs (default: all)")
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.set_defaults(run=_cli_list)
    sub = commands.add_parser("orthanc-config", help="print the configuration of a local Orthanc with DICOMweb")
    sub.add_argument("--storage", required=True, help="folder of Orthanc's database and files")
    sub.add_argument("--http-port", type=int, default=8042, help="REST and DICOMweb port (default 8042)")
    sub.add_argument("--dicom-port", type=int, default=4242, help="DICOM port (default 4242)")
    sub.add_argument("--plugin", action="append", help=f"plugin file or folder (default {DEFAULT_ORTHANC_PLUGIN})")
    sub.add_argument("--no-dicom", action="store_true", help="DICOMweb only: no DICOM (DIMSE) server on --dicom-port")
    sub.set_defaults(run=_cli_orthanc_config)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (DICOMwebError, ValueError, OSError, ImportError) as e:
        # one line for the user, no traceback: every message names the file or the server
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
