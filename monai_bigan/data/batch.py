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
An output folder that holds the results of exactly one batch of inputs, scored by one model with one set of settings,
and that a rerun resumes instead of mixing.

Layout of an output folder::

    inference_batch.json        the batch manifest: model identity (sha256 of its files), settings, data root, inputs
    records/<stem>.json         one completion record per input: its report row and the output files it wrote
    <stem>_heatmap.nii.gz ...   the outputs of each input (named by monai_bigan.data.OutputNames)
    scores.csv, scores.json     the report, rebuilt from the records of the batch's inputs at the end of each run

A record is written atomically after all the outputs of its input, so a run that stops leaves complete records only.
Rerunning into the folder with the same model and settings scores only the inputs whose record is missing, whose
outputs are missing, or which failed; another model or other settings, results of inputs outside the batch, or a folder
written by an older version (a report without a manifest) are refused. ``rescore`` removes the files the previous batch
recorded, then scores everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from monai.data import FolderLayoutBase

from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.utils.bundle import as_bool
from monai_bigan.utils.distributed import get_rank, is_distributed

from .inputs import prepare_output_dir
from .outputs import MANIFEST_FILENAME, OutputNames, source_key

__all__ = [
    "MANIFEST_FILENAME",
    "RECORDS_DIRNAME",
    "InferenceBatch",
    "OutputLayout",
    "open_inference_batch",
]

logger = logging.getLogger(__name__)

RECORDS_DIRNAME = "records"
#: version of the manifest and record layout
BATCH_FORMAT = 1
_WHAT_TO_DO = "pass --rescore true to replace them, or choose another --output_dir"


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as plain JSON values (objects with ``to_dict``, e.g. ``ScoringSettings``, become their record)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return json.loads(json.dumps(value, default=str))


def _differences(recorded: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"name recorded -> now"`` for every setting that differs, nested settings as ``outer.inner``."""
    changes = []
    for key in sorted(set(recorded) | set(now)):
        was, value = recorded.get(key), now.get(key)
        if isinstance(was, Mapping) and isinstance(value, Mapping):
            changes += _differences(was, value, f"{prefix}{key}.")
        elif was != value:
            changes.append(f"{prefix}{key} {was!r} -> {value!r}")
    return changes


class InferenceBatch:
    """
    The inputs of one inference run and the output folder they are scored into (see the module documentation).

    Construction computes the output names only; :py:meth:`prepare` (or :py:func:`open_inference_batch`) checks the
    folder against its manifest, removes what a rescore replaces, writes the manifest and sets :py:attr:`pending`.
    Under ``torch.distributed`` rank 0 alone prepares the folder and broadcasts the plan, so every rank scores from the
    same list (each its share, through :py:class:`monai_bigan.data.DistributedShareSampler`).

    Args:
        output_dir: the output folder (never an input's folder, see :py:func:`monai_bigan.data.prepare_output_dir`).
        inputs: datalist items, each with the input path under ``image_key``; an input listed twice is scored once.
        model_files: the files that make the model (checkpoint or export, calibration): their sha256 identifies it.
        settings: everything else that changes the results (``{"scoring": ScoringSettings, "threshold_mode": ...}``);
            objects with ``to_dict`` are recorded as their dictionary.
        rescore: replace the previous results of the folder instead of resuming (strings such as ``"true"`` from a
            command line are accepted).
        report_name: file name stem of the report (``<report_name>.csv`` and ``.json``).
        image_key: key of the input path in the items.
        distributed: whether every rank of the ``torch.distributed`` process group (when there is one) opens this
            batch and scores a share of it; False for a batch that one process scores alone.

    Attributes:
        pending: the items still to score (all of them before :py:meth:`prepare`).
        num_skipped: inputs already scored by a previous run with this model and these settings.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        inputs: Sequence[Mapping],
        model_files: Sequence[str | os.PathLike] = (),
        settings: Mapping[str, Any] | None = None,
        rescore: bool | str = False,
        report_name: str = "scores",
        image_key: str = "image",
        distributed: bool = True,
    ) -> None:
        self.output_dir = Path(os.path.realpath(Path(output_dir).expanduser()))
        self.distributed = bool(distributed)
        self.image_key = image_key
        unique: dict[str, dict] = {}
        for item in inputs:
            unique.setdefault(source_key(item[image_key]), dict(item))
        if len(unique) < len(inputs):
            logger.warning(f"{len(inputs) - len(unique)} inputs are listed more than once: each is scored once.")
        self.inputs = list(unique.values())
        self.names = OutputNames(list(unique))
        self.model_files = [Path(f) for f in model_files]
        self.settings = _plain(dict(settings or {}))
        self.rescore = as_bool(rescore)
        self.report_name = report_name
        self.pending: list[dict] = list(self.inputs)
        self.num_skipped = 0
        self._written: dict[str, list[Path]] = {}

    # ------------------------------------------------------------------ paths and names
    @property
    def manifest_file(self) -> Path:
        """The batch manifest."""
        return self.output_dir / MANIFEST_FILENAME

    @property
    def records_dir(self) -> Path:
        """The folder of the per-input completion records."""
        return self.output_dir / RECORDS_DIRNAME

    @property
    def report_files(self) -> list[Path]:
        """The report, CSV and JSON."""
        return [self.output_dir / f"{self.report_name}.csv", self.output_dir / f"{self.report_name}.json"]

    @property
    def data_root(self) -> str:
        """The folder the output names are relative to."""
        return self.names.root

    def stem(self, source: str | os.PathLike) -> str:
        """The output stem of the input ``source`` (see :py:class:`monai_bigan.data.OutputNames`)."""
        return self.names.stem(source)

    def record_file(self, source: str | os.PathLike) -> Path:
        """The completion record of the input ``source``."""
        return self.records_dir / f"{self.stem(source)}.json"

    def output_path(self, source: str | os.PathLike, postfix: str, extension: str) -> Path:
        """
        ``<output_dir>/<stem>_<postfix><extension>`` for the input ``source`` (its folder is created); the path is
        remembered for the input's completion record.
        """
        path = self.output_dir / f"{self.stem(source)}_{postfix}{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._written.setdefault(source_key(source), []).append(path)
        return path

    def take_outputs(self, source: str | os.PathLike) -> list[Path]:
        """The output paths given out for ``source`` since the last call (and forget them)."""
        return self._written.pop(source_key(source), [])

    @property
    def is_shared(self) -> bool:
        """Whether the ranks of a process group score this batch together."""
        return self.distributed and is_distributed()

    @property
    def is_main_process(self) -> bool:
        """Whether this process writes the report and the manifest (rank 0, or the only process)."""
        return not self.is_shared or get_rank() == 0

    def synchronize(self) -> None:
        """Wait for every rank sharing the batch (no-op otherwise): all records are written after it."""
        if self.is_shared:
            dist.barrier()

    # ------------------------------------------------------------------ manifest
    def identity(self) -> dict[str, Any]:
        """The manifest of this batch: model identity, settings, data root and inputs with their output stems."""
        model = {}
        for path in self.model_files:
            if not path.is_file():
                raise FileNotFoundError(f"model file {path} not found: it identifies the model of the batch.")
            model[path.name] = _sha256(path)
        return {
            "format": BATCH_FORMAT,
            "model": model,
            "settings": self.settings,
            "data_root": self.data_root,
            "report": [p.name for p in self.report_files],
            "inputs": [{"input": s, "output": self.names.stems[s]} for s in self.names.sources],
        }

    def _read_json(self, path: Path, what: str) -> dict:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable {what} ({e}); {_WHAT_TO_DO}.") from e
        if not isinstance(content, dict):
            raise ValueError(f"{path}: not a {what} (a JSON object was expected); {_WHAT_TO_DO}.")
        return content

    def _previous_records(self) -> dict[Path, dict | None]:
        """Every record in the folder, ``None`` for one that cannot be read."""
        records: dict[Path, dict | None] = {}
        if self.records_dir.is_dir():
            for path in sorted(self.records_dir.rglob("*.json")):
                try:
                    records[path] = self._read_json(path, "batch record")
                except ValueError:
                    records[path] = None
        return records

    def _remove(self, relative_paths: Sequence[str]) -> int:
        """Remove files of the output folder (never outside it), and the folders they leave empty; returns a count."""
        removed = 0
        for relative in relative_paths:
            path = Path(os.path.realpath(self.output_dir / relative))
            if self.output_dir not in path.parents or not path.is_file():
                continue
            path.unlink()
            removed += 1
            folder = path.parent
            while folder != self.output_dir and self.output_dir in folder.parents and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        return removed

    def _relative(self, path: Path) -> str:
        return Path(os.path.realpath(path)).relative_to(self.output_dir).as_posix()

    def _remove_record(self, record_path: Path, record: dict | None) -> int:
        files = list(record.get("files", [])) if record else []
        return self._remove([*files, self._relative(record_path)])

    # ------------------------------------------------------------------ planning
    def _plan(self) -> tuple[list[str], int]:
        """Check and clean the folder, write the manifest; the sources to score and the number skipped (rank 0)."""
        prepare_output_dir(self.output_dir, self.inputs, self.image_key)
        identity = self.identity()
        records = self._previous_records()
        out = self.output_dir
        if not self.manifest_file.is_file():
            leftovers = [p.name for p in self.report_files if p.exists()] + ([RECORDS_DIRNAME] if records else [])
            if leftovers:
                raise ValueError(
                    f"{out} holds {', '.join(leftovers)} but no {MANIFEST_FILENAME}: it was written by an older version "
                    "of monai_bigan, whose results cannot be checked or resumed; choose another --output_dir, or move "
                    "its contents away."
                )
            pending = list(self.names.sources)
        elif self.rescore:
            try:
                previous = self._read_json(self.manifest_file, "batch manifest")
            except ValueError:  # replaced anyway: only its report names are lost
                previous = {}
            removed = sum(self._remove_record(path, record) for path, record in records.items())
            reports = [p.name for p in self.report_files] + list(previous.get("report", []))
            removed += self._remove([*dict.fromkeys(reports), MANIFEST_FILENAME])
            logger.info(f"rescore: removed {removed} files of the previous batch in {out}; scoring all inputs.")
            pending = list(self.names.sources)
        else:
            pending = self._resume(self._read_json(self.manifest_file, "batch manifest"), identity, records)
        atomic_write_text(self.manifest_file, json.dumps(identity, indent=2))
        skipped = len(self.names.sources) - len(pending)
        if skipped:
            logger.info(
                f"resuming in {out}: {skipped} of {len(self.names.sources)} inputs already scored with this model and "
                f"these settings are skipped, {len(pending)} to score."
            )
        return pending, skipped

    def _resume(self, previous: dict, identity: dict, records: dict[Path, dict | None]) -> list[str]:
        """The inputs to score again after checking that the folder holds results of this batch only."""
        out = self.output_dir
        if previous.get("format") != BATCH_FORMAT:
            raise ValueError(
                f"{self.manifest_file} has batch format {previous.get('format')!r}, this version writes "
                f"{BATCH_FORMAT}; {_WHAT_TO_DO}."
            )
        if previous.get("model") != identity["model"]:
            changed = sorted(
                name
                for name in set(previous.get("model") or {}) | set(identity["model"])
                if (previous.get("model") or {}).get(name) != identity["model"].get(name)
            )
            raise ValueError(
                f"{out} holds results of another model ({', '.join(changed)} differ from the files that scored them); "
                f"{_WHAT_TO_DO}."
            )
        changes = _differences(previous.get("settings") or {}, identity["settings"])
        if changes:
            raise ValueError(f"{out} holds results scored with other settings ({'; '.join(changes)}); {_WHAT_TO_DO}.")
        if previous.get("data_root") != identity["data_root"]:
            raise ValueError(
                f"{out} holds results named after the data root {previous.get('data_root')}, this batch's is "
                f"{identity['data_root']}; {_WHAT_TO_DO}."
            )
        unreadable = [path for path, record in records.items() if record is None]
        if unreadable:
            raise ValueError(f"{unreadable[0]}: unreadable batch record; {_WHAT_TO_DO}.")
        by_source = {source_key(str(r.get("input", ""))): (path, r) for path, r in records.items() if r is not None}
        foreign = [source for source in by_source if source not in self.names]
        if foreign:
            raise ValueError(
                f"{out} holds results of {len(foreign)} inputs that are not in this batch (e.g. {foreign[0]}); "
                f"{_WHAT_TO_DO}."
            )
        pending, removed = [], 0
        for source in self.names.sources:
            path, record = by_source.get(source, (None, None))
            if record is not None and self._is_complete(source, path, record):
                continue
            pending.append(source)
            if record is not None:
                # an error row, missing outputs or a renamed input: its leftovers go before it is scored again
                removed += self._remove_record(path, record)
        if removed:
            logger.info(f"removed {removed} files of incomplete or failed results in {out} before scoring them again.")
        return pending

    def _is_complete(self, source: str, path: Path, record: dict) -> bool:
        row = record.get("row") or {}
        files = record.get("files") or []
        return (
            path == self.record_file(source)
            and record.get("output") == self.stem(source)
            and row.get("status") == "ok"
            and all((self.output_dir / f).is_file() for f in files)
        )

    def prepare(self) -> InferenceBatch:
        """
        Check the output folder, remove what a rescore replaces, write the manifest and set :py:attr:`pending`; under
        ``torch.distributed`` rank 0 does it and every rank gets its plan (or its error).

        Raises:
            ValueError: the folder is an input folder, or holds results of another model, other settings, other
                inputs, or of an older version (one line saying why and what to do).
        """
        if not self.is_shared:
            pending, self.num_skipped = self._plan()
        else:
            payload: list[Any] = [None]
            error: Exception | None = None
            if get_rank() == 0:
                try:
                    payload = [("plan", (self.names.sources, *self._plan()))]
                except Exception as e:  # every rank must leave the broadcast, then fail alike
                    error = e
                    payload = [("error", f"{type(e).__name__}: {e}")]
            dist.broadcast_object_list(payload, src=0)
            kind, value = payload[0]
            if error is not None:
                raise error
            if kind == "error":
                raise ValueError(f"rank 0 refused the output folder: {value}")
            sources, pending, self.num_skipped = value
            if sources != self.names.sources:
                raise ValueError(
                    f"rank {get_rank()} lists {len(self.names.sources)} inputs, rank 0 lists {len(sources)} (or others): "
                    "every rank must see the same inputs (the same --dataset_dir on a shared file system, unchanged "
                    "while the run starts)."
                )
        by_source = {source_key(item[self.image_key]): item for item in self.inputs}
        self.pending = [by_source[source] for source in pending]
        return self

    # ------------------------------------------------------------------ records
    def write_record(self, row: Mapping[str, Any], files: Sequence[str | os.PathLike] = ()) -> Path | None:
        """
        Write the completion record of the input ``row["input"]`` atomically: its report row and the output files that
        exist. Call it after all its outputs are written. Rows of inputs outside the batch are logged and not recorded.
        """
        source = str(row["input"])
        if source not in self.names:
            logger.warning(f"{source} is not an input of this batch: its result is not recorded.")
            return None
        existing = [self._relative(Path(f)) for f in files if Path(f).is_file()]
        record = {"input": source_key(source), "output": self.stem(source), "row": dict(row), "files": existing}
        return atomic_write_text(self.record_file(source), json.dumps(record, indent=2))

    def records(self) -> list[dict | None]:
        """The completion record of every input of the batch, in order; ``None`` where there is none."""
        result: list[dict | None] = []
        for source in self.names.sources:
            path = self.record_file(source)
            record = None
            if path.is_file():
                try:
                    record = self._read_json(path, "batch record")
                except ValueError as e:
                    logger.warning(str(e))
            if record is not None and source_key(str(record.get("input", ""))) != source:
                record = None
            result.append(record)
        return result


class OutputLayout(FolderLayoutBase):
    """
    ``monai.data.FolderLayoutBase`` naming the outputs of an :py:class:`InferenceBatch`, for
    ``SaveImaged(folder_layout=...)`` and :py:class:`monai_bigan.visualize.ReviewSheetd`: the input
    ``subject`` (the ``filename_or_obj`` of its metadata) gets ``<output_dir>/<stem>_<postfix><extension>``, and the
    batch remembers the file for the input's completion record.

    Args:
        batch: the batch.
        postfix: the kind of output, e.g. ``"heatmap"``.
        extension: e.g. ``".nii.gz"``.
    """

    def __init__(self, batch: InferenceBatch, postfix: str, extension: str = ".nii.gz") -> None:
        self.batch = batch
        self.postfix = postfix
        self.extension = extension if not extension or extension.startswith(".") else f".{extension}"

    def filename(self, subject: str | os.PathLike = "subject", idx: Any = None, **kwargs: Any) -> str:
        """The output file of the input ``subject`` (``idx``, a patch index, is appended when given)."""
        postfix = self.postfix if idx is None else f"{self.postfix}_{idx}"
        return str(self.batch.output_path(subject, postfix, self.extension))


def open_inference_batch(
    output_dir: str | os.PathLike,
    inputs: Sequence[Mapping],
    model_files: Sequence[str | os.PathLike] = (),
    settings: Mapping[str, Any] | None = None,
    rescore: bool | str = False,
    report_name: str = "scores",
    image_key: str = "image",
    distributed: bool = True,
) -> InferenceBatch:
    """
    An :py:class:`InferenceBatch` whose output folder is checked and prepared (see :py:meth:`InferenceBatch.prepare`):
    its :py:attr:`~InferenceBatch.pending` items are what this run scores.

    Example::

        batch = open_inference_batch("out", inference_datalist("scans"), ["models/model.pt"], {"scoring": settings})
        batch.pending  # the inputs without a complete result in "out"
    """
    batch = InferenceBatch(output_dir, inputs, model_files, settings, rescore, report_name, image_key, distributed)
    return batch.prepare()
