"""
Model-zoo conformity of ``bundles/bigan``, checked offline with MONAI's public bundle functions.

Project-MONAI/model-zoo verifies every bundle it hosts: necessary and preferred files, version and changelog, the
metadata against its JSON schema, the network's input/output against ``network_data_format``
(``verify_net_in_out``), the export of ``models/model.pt`` to TorchScript (``ckpt_export``) and, for bundles that
declare supported apps, the inference workflow's properties. The same checks run here on the bundle, on small
generated data, without downloads: the metadata is verified against the schema file kept in the bundle's ``docs``.

The model zoo keeps the configs in ``<bundle>/configs/``; this repository keeps them in the bundle folder (see
``bundles/bigan/docs/README.md``, "Model-zoo conformity"): the tests read them where they are, and
:func:`test_model_zoo_layout_copy` checks a copy laid out as the model zoo expects. Config macros
(``%<file>#<id>``) resolve relative to the working directory, so the tests run at the repository root.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.data import load_net_with_metadata
from monai.utils import get_equivalent_dtype
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from monai_bigan.bundle.package import main as package_main
from tests.bundle.test_train_bundle import PRESET_3D, TINY_2D, TINY_3D, TRAIN
from tests.conftest import REPO_ROOT, train_tiny_bundle

BUNDLE = REPO_ROOT / "bundles" / "bigan"
# the configs are in the bundle folder, or in <bundle>/configs/ once laid out as the model zoo lays bundles out
CONFIG_DIR = BUNDLE / "configs" if (BUNDLE / "configs" / "metadata.json").is_file() else BUNDLE
META = str(CONFIG_DIR / "metadata.json")
INFERENCE = str(CONFIG_DIR / "inference.json")
LOGGING = str(CONFIG_DIR / "logging.conf")
# an existing schema file: verify_metadata then reads it instead of downloading the metadata's "schema" URL
LOCAL_SCHEMA = BUNDLE / "docs" / "meta_schema.json"
#: the model zoo's limit for any one file of a bundle (larger ones are linked from large_files.yml)
MAX_FILE_BYTES = 25 * 1024 * 1024
#: folders that running the bundle writes into it (git-ignored), not part of the bundle
GENERATED = ("data", "models", "logs", "eval", "outputs")
#: network format of the metadata verify_net_in_out reads; the other variants' formats replace it for their check
DEFAULT_FORMAT = "network_data_format"
#: the model zoo's default network id, and the id of the anomaly scorer the metadata describes
NETWORK_DEF, SCORER_DEF = "network_def", "scorer_def"
VARIANTS = {
    # variant: (inference configs, metadata key of its network format, tiny overrides, training configs)
    "2d": ([INFERENCE], DEFAULT_FORMAT, TINY_2D, TRAIN),
    "3d": ([INFERENCE, PRESET_3D], "brain_3d_data_format", TINY_3D, [TRAIN, PRESET_3D]),
}
TENSOR_KEYS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")


def _metadata() -> dict:
    return json.loads(Path(META).read_text())


def _format_override(variant: str) -> dict:
    """Overrides that make ``verify_net_in_out`` read the variant's network format (it reads the default one)."""
    key = VARIANTS[variant][1]
    return {} if key == DEFAULT_FORMAT else {f"_meta_#{DEFAULT_FORMAT}": copy.deepcopy(_metadata()[key])}


@pytest.fixture(scope="module", autouse=True)
def _at_repo_root():
    """Run every test, and the module's fixtures, at the repository root, as the README's commands run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO_ROOT)
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """``trained(variant)``: a bundle root with a tiny model of that variant trained for one epoch, trained once."""
    roots: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in roots:
            _, _, tiny, train = VARIANTS[variant]
            roots[variant] = train_tiny_bundle(
                tmp_path_factory.mktemp(f"trained_{variant}"), tiny_dataset, train, **tiny
            )
        return roots[variant]

    return get


def test_necessary_and_preferred_files():
    """LICENSE (that exact name) and metadata are necessary; an inference config is preferred; no file over 25 MB."""
    assert (BUNDLE / "LICENSE").is_file()
    assert Path(META).is_file()
    assert any((CONFIG_DIR / f"inference.{ext}").is_file() for ext in ("json", "yaml", "yml"))
    assert Path(LOGGING).is_file()  # the model zoo passes configs/logging.conf to the workflow
    assert (BUNDLE / "docs" / "README.md").is_file()
    # models/model.pt, the other preferred file, is written by training: test_ckpt_export exports a trained one
    files = [p for p in BUNDLE.rglob("*") if p.is_file() and p.relative_to(BUNDLE).parts[0] not in GENERATED]
    assert [str(p) for p in files if p.stat().st_size > MAX_FILE_BYTES] == []


def test_version_and_changelog():
    meta = _metadata()
    assert meta["version"] in meta["changelog"]
    assert Version(meta["version"]) == max(Version(v) for v in meta["changelog"])  # the newest entry


def test_metadata_verifies_against_the_local_schema():
    assert LOCAL_SCHEMA.is_file()
    assert _metadata()["schema"].startswith("https://")  # the official schema, for the model zoo's download
    verify_metadata(meta_file=META, filepath=str(LOCAL_SCHEMA))


def test_metadata_types_of_the_optional_keys():
    """The types the bundle specification gives keys that the local schema does not type."""
    meta = _metadata()
    text = ("name", "authors", "copyright", "data_source", "data_type", "intended_use", "image_classes", "pred_classes")
    for key in (*text, "label_classes"):
        assert isinstance(meta.get(key, ""), str), key
    for key in ("changelog", "eval_metrics", "supported_apps", "required_packages_version"):
        assert isinstance(meta.get(key, {}), dict), key
    assert all(isinstance(r, str) for r in meta.get("references", []))


def test_network_data_formats():
    """Every variant has a format with the ``image`` input and ``pred`` output that verify_net_in_out reads."""
    meta = _metadata()
    assert {v[1] for v in VARIANTS.values()} <= set(meta)
    formats = {k: v for k, v in meta.items() if k.endswith("_data_format")}
    for name, fmt in formats.items():
        assert "image" in fmt["inputs"] and "pred" in fmt["outputs"], name
        tensors = {**fmt["inputs"], **fmt["outputs"], **fmt.get("post_processed_outputs", {})}
        for key, tensor in tensors.items():
            where = f"{name}: {key}"
            assert set(TENSOR_KEYS) <= set(tensor), where
            get_equivalent_dtype(tensor["dtype"], torch.Tensor)  # a dtype torch knows
            assert len(tensor["spatial_shape"]) in (2, 3), where
            assert tensor["value_range"] == [] or (
                len(tensor["value_range"]) == 2 and tensor["value_range"][0] < tensor["value_range"][1]
            ), where
            if tensor["format"] != "segmentation":  # whose channel_def names the label values instead
                assert len(tensor.get("channel_def", {})) in (0, tensor["num_channels"]), where
        assert fmt["inputs"]["image"]["spatial_shape"] == fmt["outputs"]["pred"]["spatial_shape"], name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_verify_net_in_out(variant):
    """The anomaly scorer maps the documented input to the documented output, as verify_net_in_out checks it."""
    configs = VARIANTS[variant][0]
    override = _format_override(variant)
    verify_net_in_out(
        net_id=SCORER_DEF, meta_file=META, config_file=configs, device="cpu", bundle_root=str(BUNDLE), **override
    )
    # verify_net_in_out checks the channels and dtype of the output: check its spatial shape too
    fmt = _metadata()[VARIANTS[variant][1]]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    parser = ConfigParser()
    parser.read_config(configs)
    parser["bundle_root"] = str(BUNDLE)
    scorer = parser.get_parsed_content(SCORER_DEF).eval()
    low, high = image["value_range"]
    x = torch.rand(1, image["num_channels"], *image["spatial_shape"]) * (high - low) + low
    with torch.no_grad():
        out = scorer(x.to(get_equivalent_dtype(image["dtype"], torch.Tensor)))
    assert out.shape == (1, pred["num_channels"], *pred["spatial_shape"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_network_def_as_the_model_zoo_verifies_it(variant):
    """The model zoo verifies ``network_def``: the inference config names the anomaly scorer so (the BiGAN whose
    weights it holds is ``bigan_def``), so the documented three maps come out of it."""
    configs = VARIANTS[variant][0]
    kwargs = dict(meta_file=META, config_file=configs, device="cpu", bundle_root=str(BUNDLE))
    verify_net_in_out(net_id=NETWORK_DEF, **kwargs, **_format_override(variant))


def _export(root: Path, variant: str, ckpt_file: Path, filepath: Path, **kwargs) -> torch.jit.ScriptModule:
    configs, _, tiny, _ = VARIANTS[variant]
    filepath.parent.mkdir(parents=True, exist_ok=True)
    ckpt_export(
        net_id=SCORER_DEF,
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        meta_file=META,
        config_file=configs,
        bundle_root=str(root),
        **kwargs,
        **tiny,
    )
    names = [f"{Path(c).stem}.json" for c in configs]
    scripted, meta, extra = load_net_with_metadata(str(filepath), more_extra_files=names)  # torch.jit.load
    assert meta["version"] == _metadata()["version"]
    assert sorted(extra) == sorted(names) and all(json.loads(v) for v in extra.values())
    return scripted


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ckpt_export(trained, variant, tmp_path):
    """
    ``ckpt_export`` scripts the trained scorer with the metadata and configs inside, from the training checkpoint
    (``--key_in_ckpt ema_network``) and, as the model zoo runs it (no key), from a checkpoint holding the state dict
    alone, as a model-zoo release of ``models/model.pt`` would.
    """
    root = trained(variant)
    model_pt = root / "models" / "model.pt"
    scripted = _export(root, variant, model_pt, tmp_path / "models" / "verify_model.ts", key_in_ckpt="ema_network")
    release = tmp_path / "release" / "models" / "model.pt"
    release.parent.mkdir(parents=True)
    torch.save(torch.load(model_pt, map_location="cpu", weights_only=True)["ema_network"], release)
    released = _export(root, variant, release, tmp_path / "release" / "models" / "verify_model.ts")

    pred = _metadata()[VARIANTS[variant][1]]["outputs"]["pred"]
    x = torch.rand(2, 1, *VARIANTS[variant][2]["image_size"]) * 2 - 1
    with torch.no_grad():
        out = scripted(x)
    assert out.shape == (2, pred["num_channels"], *x.shape[2:])
    assert out.dtype == get_equivalent_dtype(pred["dtype"], torch.Tensor)
    assert out[:, 1].abs().max() <= 1.0  # the reconstruction, in [-1, 1] as pred_classes says
    with torch.no_grad():
        torch.testing.assert_close(released(x), out)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_inference_workflow_properties(trained, tiny_dataset, variant, tmp_path):
    """The inference workflow's properties, with the metadata's (the model zoo's property check), and its keys."""
    configs, _, tiny, _ = VARIANTS[variant]
    wf = ConfigWorkflow(
        config_file=configs,
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="inference",
        bundle_root=str(trained(variant)),
        dataset_dir=str(tiny_dataset),
        output_dir=str(tmp_path / "out"),
        **tiny,
    )
    wf.initialize()
    assert wf.check_properties() == []
    assert "output_dir" in wf.parser  # the model zoo's name for the folder of output files


def test_train_workflow_properties(tiny_dataset, tmp_path):
    wf = ConfigWorkflow(
        config_file=TRAIN,
        meta_file=META,
        logging_file=LOGGING,
        workflow_type="train",
        bundle_root=str(tmp_path / "bundle"),
        dataset_dir=str(tiny_dataset),
        max_epochs=1,
        **TINY_2D,
    )
    wf.initialize()
    assert wf.check_properties() == []
    assert "output_dir" in wf.parser and "val_interval" in wf.parser


def test_required_packages_version():
    """Pins that monai_bigan's own requirements (with every extra) accept, for all that it needs to run."""
    meta = _metadata()
    try:
        requirements = [Requirement(r) for r in importlib.metadata.requires("monai_bigan") or []]
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("monai_bigan is not installed: pip install -e .")
    import monai_bigan

    pins = dict(meta["required_packages_version"])
    assert pins["monai_bigan"] == monai_bigan.__version__
    pins.update(monai=meta["monai_version"], torch=meta["pytorch_version"], numpy=meta["numpy_version"])
    pinned = {canonicalize_name(name): version for name, version in pins.items()}
    for name in pinned:
        importlib.metadata.version(name)  # installed
    for req in requirements:
        version = pinned.get(canonicalize_name(req.name))
        assert version is None or req.specifier.contains(version, prereleases=True), f"{req} excludes {version}"
    needed = {canonicalize_name(r.name) for r in requirements if r.marker is None}
    assert needed - set(pinned) == set(), "pin every package monai_bigan needs to run"


def test_model_zoo_layout_copy(trained, tmp_path):
    """
    ``python -m monai_bigan.bundle.package`` writes the bundle in the model zoo's layout (``configs/`` holding
    standalone configs, ``models/model.pt``), which passes the zoo's file checks and verifies and exports with its
    default paths and net id, from the bundle's own folder as the zoo runs it.
    """
    zoo = tmp_path / "models" / "bigan"
    assert package_main(["--output_dir", str(zoo), "--checkpoint", str(trained("2d") / "models" / "model.pt")]) == 0
    for name in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (zoo / name).is_file(), name
    for config in (zoo / "configs").glob("*.json"):
        assert (
            "%bundles/bigan/common.json" not in config.read_text()
        ), f"{config.name} still references the shared config"
    (zoo / "eval").mkdir()
    shutil.copy(LOCAL_SCHEMA, zoo / "eval" / "schema.json")
    verify_metadata(meta_file=str(zoo / "configs" / "metadata.json"), filepath=str(zoo / "eval" / "schema.json"))
    cwd = os.getcwd()
    os.chdir(zoo)  # the zoo runs a bundle from its folder: no path may lead back into the repository
    try:
        verify_net_in_out(
            net_id=NETWORK_DEF, config_file="configs/inference.json", meta_file="configs/metadata.json", device="cpu"
        )
        # meta_file, ckpt_file and filepath default to configs/metadata.json, models/model.pt and models/model.ts
        ckpt_export(net_id=NETWORK_DEF, config_file="configs/inference.json", bundle_root=".", **TINY_2D)
    finally:
        os.chdir(cwd)
    _, meta, _ = load_net_with_metadata(str(zoo / "models" / "model.ts"))
    assert meta["version"] == _metadata()["version"]
