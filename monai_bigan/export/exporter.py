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
Export the anomaly scorer of a trained bundle to TorchScript (``models/model.ts``) and ONNX (``models/model.onnx``).

The scorer maps images ``[B, 1, *image_size]`` to three maps ``[B, 3, *image_size]`` (residual, reconstruction and
the discriminator term), see :py:class:`monai_bigan.inferers.AnomalyScorer`. The exported files run with torch alone
(``torch.jit.load``) or with onnxruntime; ``bundles/bigan/inference_ts.json`` runs the inference bundle from
``models/model.ts``. The batch axis is dynamic; the spatial shape is fixed to ``image_size`` by the encoder's and the
discriminator's linear layers (the bundle's slice and window inferers feed patches of that size).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata
from monai.networks import convert_to_torchscript
from torch import nn

from monai_bigan.bundle import EXPORTED_STATISTICS_FILE, TrainedModel, bundle_config_parser, load_trained_model
from monai_bigan.bundle.package import SHARED_CONFIG, inline_shared_config
from monai_bigan.io.atomic import atomic_path
from monai_bigan.utils import default_bundle_root

__all__ = [
    "DEFAULT_CHECKPOINT_KEY",
    "bundle_parser",
    "export_bundle",
    "export_onnx",
    "export_torchscript",
    "load_scorer",
    "main",
]

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_KEY = "ema_network"
#: file written beside model.ts with the healthy residual statistics of the heatmap normalization
RESIDUAL_STATISTICS_FILE = EXPORTED_STATISTICS_FILE
FORMATS = ("torchscript", "onnx", "all")


def _bundle_file(bundle_root: str | os.PathLike, name: str) -> str:
    """``<bundle_root>/<name>`` if it exists, else the shipped bundle's file (a trained bundle may hold models only)."""
    own = Path(bundle_root) / name
    return str(own) if own.is_file() else str(Path(default_bundle_root()) / name)


def bundle_parser(
    bundle_root: str | os.PathLike,
    config_file: str | Sequence[str] | None = None,
    meta_file: str | None = None,
    **override: Any,
) -> ConfigParser:
    """
    The inference config of a bundle, with its metadata, ready to build the scorer on the CPU.

    Args:
        bundle_root: the bundle folder holding ``models/model.pt``.
        config_file: inference config file(s), layered in order; default ``<bundle_root>/inference.json``, else the
            shipped ``bundles/bigan/inference.json``.
        meta_file: default ``<bundle_root>/metadata.json``, else the shipped one.
        override: config ids and values, e.g. ``channels=[4, 8]``, as ``--channels "[4, 8]"`` on the command line.

    Returns:
        the parser, with ``bundle_root`` and the overrides set and ``device`` set to the CPU.
    """
    parser = bundle_config_parser(
        config_file if config_file is not None else _bundle_file(bundle_root, "inference.json")
    )
    parser.read_meta(f=meta_file if meta_file is not None else _bundle_file(bundle_root, "metadata.json"))
    parser["bundle_root"] = str(bundle_root)
    parser["device"] = "$torch.device('cpu')"
    for key, value in override.items():
        parser[key] = value
    return parser


def load_scorer(
    parser: ConfigParser, ckpt_file: str | os.PathLike | None = None, key_in_ckpt: str = DEFAULT_CHECKPOINT_KEY
) -> nn.Module:
    """
    Build the config's scorer and load the trained BiGAN into it with the package's one loader
    (:py:func:`monai_bigan.bundle.load_trained_model`: safe loading, EMA fallback, a clear error for another network).

    Args:
        parser: from :py:func:`bundle_parser`.
        ckpt_file: the checkpoint; default the config's ``ckpt_file`` (``<bundle_root>/models/model.pt``).
        key_in_ckpt: key of the BiGAN state dict in the checkpoint (``ema_network``: the EMA copy that inference
            uses, or ``network``).

    Returns:
        the scorer in eval mode, on the CPU.

    Raises:
        ValueError: the scoring settings ask for what an exported graph cannot compute (test-time refinement, ALAD's
            D_xx score): the scripted scorer would silently score differently from the checkpoint.
    """
    return _load(parser, ckpt_file, key_in_ckpt)[0]


def _load(
    parser: ConfigParser, ckpt_file: str | os.PathLike | None, key_in_ckpt: str
) -> tuple[nn.Module, TrainedModel]:
    """The exportable scorer and the trained model it wraps (weights and, with normalization, the statistics)."""
    scoring = parser.get_parsed_content("scoring")
    problems = scoring.export_problems()
    if problems:
        raise ValueError(
            "refusing to export: the exported scorer would compute something other than the checkpoint's scorer: "
            + "; ".join(problems)
            + "."
        )
    ckpt_file = ckpt_file if ckpt_file is not None else parser.get_parsed_content("ckpt_file")
    model = load_trained_model(ckpt_file, parser.get_parsed_content("bigan_def"), scoring, checkpoint_key=key_in_ckpt)
    return scoring.scorer(model.network).cpu().eval(), model


def _example_input(parser: ConfigParser, batch_size: int = 2) -> torch.Tensor:
    """A random batch of the network's input shape ``[batch_size, *in_shape]``."""
    return torch.rand([batch_size] + [int(s) for s in parser.get_parsed_content("geometry").in_shape]) * 2 - 1


def _config_extra_files(config_file: str | Sequence[str]) -> dict[str, bytes]:
    """
    The config files as JSON extra files named ``<file stem>.json``, as ``monai.bundle ckpt_export`` stores them, with
    the shared definitions of ``common.json`` inlined so that each stored config stands alone.
    """
    files = [config_file] if isinstance(config_file, (str, os.PathLike)) else list(config_file)
    extra: dict[str, bytes] = {}
    for name in files:
        stem = Path(name).name.split(".")[0]
        if f"{stem}.json" in extra:
            raise ValueError(f"config file name {stem!r} is given more than once.")
        content = ConfigParser.load_config_file(name)
        shared = Path(name).parent / SHARED_CONFIG
        if shared.is_file():
            content = inline_shared_config(content, ConfigParser.load_config_file(shared))
        extra[f"{stem}.json"] = json.dumps(content).encode()
    return extra


def export_torchscript(
    scorer: nn.Module,
    filepath: str | os.PathLike,
    example: torch.Tensor | None = None,
    meta_values: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
    atol: float = 1e-5,
) -> torch.jit.ScriptModule:
    """
    Script the scorer with ``torch.jit.script`` and save it with the metadata and configs as extra files.

    The file is what ``python -m monai.bundle ckpt_export`` writes (MONAI's ``save_net_with_metadata``):
    ``extra/metadata.json`` and one ``extra/<config stem>.json`` per config file.

    Args:
        scorer: the scorer, in eval mode.
        filepath: the ``.ts`` file to write.
        example: if given, a batch on which the scripted scorer must match the scorer within ``atol``.
        meta_values: the bundle metadata to embed.
        extra_files: more extra files (name: bytes), e.g. the configs.
        atol: tolerance of that check.

    Returns:
        the scripted scorer.
    """
    scripted = convert_to_torchscript(scorer.eval())
    if example is not None:
        with torch.no_grad():
            expected, actual = scorer(example), scripted(example)
        torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-4)
    Path(filepath).parent.mkdir(parents=True, exist_ok=True)
    stem = str(Path(filepath).with_suffix(""))
    save_net_with_metadata(
        scripted,
        stem,
        include_config_vals=False,
        append_timestamp=False,
        meta_values=meta_values,
        more_extra_files=extra_files,
    )
    if Path(stem + ".ts") != Path(filepath):
        os.replace(stem + ".ts", filepath)
    return scripted


def export_onnx(
    scorer: nn.Module,
    filepath: str | os.PathLike,
    example: torch.Tensor,
    opset_version: int = 18,
    metadata: dict[str, str] | None = None,
    atol: float = 1e-4,
) -> str:
    """
    Export the scorer to ONNX with a dynamic batch axis (input ``image``, output ``maps``), and check it.

    Needs the ``onnx``, ``onnxscript`` and ``onnxruntime`` packages (``pip install -e ".[export]"``). The spatial
    shape stays that of ``example``: the encoder and the discriminator end with linear layers sized for it.

    Args:
        scorer: the scorer, in eval mode.
        filepath: the ``.onnx`` file to write (weights inside, no external data file).
        example: a batch of at least 2 images of the network's input shape.
        opset_version: the ONNX opset (17 or more).
        metadata: strings stored as the ONNX model's ``metadata_props``, e.g. the bundle metadata as JSON.
        atol: tolerance of the onnxruntime check against the scorer on ``example``.

    Returns:
        the path written.
    """
    import onnx
    import onnxruntime

    scorer = scorer.eval()
    Path(filepath).parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            scorer,
            (example,),
            input_names=["image"],
            output_names=["maps"],
            opset_version=opset_version,
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
        )
    model = program.model_proto
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(filepath))
    session = onnxruntime.InferenceSession(str(filepath), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"image": example.numpy()})
    with torch.no_grad():
        expected = scorer(example)
    torch.testing.assert_close(torch.from_numpy(actual), expected, atol=atol, rtol=1e-4)
    return str(filepath)


def export_bundle(
    bundle_root: str | os.PathLike,
    fmt: str = "torchscript",
    config_file: str | Sequence[str] | None = None,
    meta_file: str | None = None,
    ckpt_file: str | os.PathLike | None = None,
    key_in_ckpt: str = DEFAULT_CHECKPOINT_KEY,
    output_dir: str | os.PathLike | None = None,
    **override: Any,
) -> list[str]:
    """
    Export the scorer of a trained bundle: ``models/model.ts`` and/or ``models/model.onnx``, and, when the checkpoint
    has them, the healthy residual statistics of the heatmap normalization (``models/residual_statistics.pt``, used by
    the post-processing of ``inference_ts.json``; the exported scorer itself stops at the raw residual).

    Args:
        bundle_root: the bundle folder holding ``models/model.pt``.
        fmt: ``"torchscript"``, ``"onnx"`` or ``"all"``.
        config_file: inference config file(s), see :py:func:`bundle_parser`.
        meta_file: metadata file, see :py:func:`bundle_parser`.
        ckpt_file: the checkpoint, see :py:func:`load_scorer`.
        key_in_ckpt: key of the BiGAN state dict in the checkpoint.
        output_dir: where to write; default ``<bundle_root>/models``.
        override: config ids and values, the same as at training (e.g. ``channels``, ``image_size``).

    Returns:
        the paths written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
    config_file = config_file if config_file is not None else _bundle_file(bundle_root, "inference.json")
    meta_file = meta_file if meta_file is not None else _bundle_file(bundle_root, "metadata.json")
    parser = bundle_parser(bundle_root, config_file, meta_file, **override)
    scorer, model = _load(parser, ckpt_file, key_in_ckpt)
    example = _example_input(parser)
    meta = parser.get().get("_meta_", {})
    out = Path(output_dir) if output_dir is not None else Path(bundle_root) / "models"
    written = []
    if fmt in ("torchscript", "all"):
        path = out / "model.ts"
        export_torchscript(scorer, path, example, meta_values=meta, extra_files=_config_extra_files(config_file))
        written.append(str(path))
    if fmt in ("onnx", "all"):
        path = out / "model.onnx"
        props = {"metadata.json": json.dumps(meta), "in_shape": json.dumps(list(example.shape[1:]))}
        export_onnx(scorer, path, example, metadata=props)
        written.append(str(path))
    statistics = None if model.statistics is None else model.statistics.state_dict()
    if statistics is not None and written:
        # the heatmap normalization runs in the post-processing, not in the exported scorer
        path = out / RESIDUAL_STATISTICS_FILE
        with atomic_path(path) as tmp:
            torch.save(statistics, tmp)
        written.append(str(path))
    for path in written:
        logger.info(f"exported {path}")
    return written


def _value(text: str) -> Any:
    """A command-line override value: JSON if it parses (``"[4, 8]"``, ``8``, ``null``), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line: ``python -m monai_bigan.export --bundle_root B [--format torchscript|onnx|all] [--id value ...]``.

    Unknown ``--id value`` pairs override the inference config, as with ``python -m monai.bundle run`` (values are
    parsed as JSON when they can be), e.g. the network settings used at training.

    Args:
        argv: the arguments, default ``sys.argv[1:]``.

    Returns:
        the exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="python -m monai_bigan.export", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--bundle_root", default=default_bundle_root(), help="bundle folder holding models/model.pt")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="torchscript")
    parser.add_argument("--config_file", nargs="+", default=None, help="inference config file(s), layered in order")
    parser.add_argument("--meta_file", default=None)
    parser.add_argument("--ckpt_file", default=None, help="default <bundle_root>/models/model.pt")
    parser.add_argument("--key_in_ckpt", default=DEFAULT_CHECKPOINT_KEY, help="BiGAN state dict key in the checkpoint")
    parser.add_argument("--output_dir", default=None, help="default <bundle_root>/models")
    args, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or not all(k.startswith("--") for k in rest[::2]):
        parser.error(f"overrides must be --id value pairs, got {rest}")
    override = {k[2:]: _value(v) for k, v in zip(rest[::2], rest[1::2])}
    config_file = args.config_file[0] if args.config_file and len(args.config_file) == 1 else args.config_file
    for path in export_bundle(
        args.bundle_root,
        args.fmt,
        config_file=config_file,
        meta_file=args.meta_file,
        ckpt_file=args.ckpt_file,
        key_in_ckpt=args.key_in_ckpt,
        output_dir=args.output_dir,
        **override,
    ):
        print(path)
    return 0
