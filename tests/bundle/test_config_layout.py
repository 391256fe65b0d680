"""
The bundle as configuration: shared parts defined once in ``common.json``, workflow files that hold only their own
parts, few expressions, one ``mode`` key, and every workflow building the same network and scoring from it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from monai.bundle import ConfigParser
from monai.transforms import RandCropByPosNegLabeld

from monai_bigan.bundle import bundle_config_parser
from tests.conftest import REPO_ROOT

BUNDLE = REPO_ROOT / "bundles" / "bigan"
CONFIGS = sorted(p for p in BUNDLE.glob("*.json") if p.name != "metadata.json")
WORKFLOWS = ["train.json", "inference.json", "evaluate.json", "multi_gpu_train.json", "inference_ts.json"]
#: the interdependent keys that ``mode`` replaced
RETIRED_KEYS = {"spatial_dims", "input_spatial_dims", "resize_to", "baseline_grid", "axcodes", "in_shape"}


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _non_trivial(value) -> bool:
    """Definitions and logic: a component (``_target_``) or an expression, alone or inside a container.
    Literals, ``@`` references and ``%`` macros (the sharing mechanism itself) are trivial."""
    if isinstance(value, dict):
        return "_target_" in value or any(_non_trivial(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_trivial(v) for v in value)
    return isinstance(value, str) and value.startswith("$")


def test_few_expressions_over_all_bundle_configs():
    counts = {p.name: sum(s.startswith("$") for s in _strings(json.loads(p.read_text()))) for p in CONFIGS}
    assert sum(counts.values()) <= 90, counts


def test_definitions_are_not_repeated_across_workflow_files():
    seen: Counter = Counter()
    for name in WORKFLOWS:
        content = json.loads((BUNDLE / name).read_text())
        for key, value in content.items():
            if _non_trivial(value):
                seen[(key, json.dumps(value, sort_keys=True))] += 1
    repeated = [key for (key, _), n in seen.items() if n > 1]
    assert len(repeated) <= 8, repeated
    shared = json.loads((BUNDLE / "common.json").read_text())
    for name in ("train.json", "inference.json"):
        content = json.loads((BUNDLE / name).read_text())
        copied = [k for k in shared if _non_trivial(shared[k]) and content.get(k) == shared[k]]
        assert not copied, f"{name} copies {copied} instead of referencing common.json"


def test_one_mode_key_replaces_the_geometry_keys():
    for path in CONFIGS + sorted((REPO_ROOT / "configs").glob("*.json")):
        keys = set(json.loads(path.read_text()))
        assert not keys & RETIRED_KEYS, f"{path.name}: {keys & RETIRED_KEYS}"


@pytest.mark.parametrize("preset", [None, "brain_3d.json", "images_2d.json"])
def test_training_and_inference_build_the_same_model_from_one_definition(preset):
    layers = [] if preset is None else [str(REPO_ROOT / "configs" / preset)]
    train = bundle_config_parser([str(BUNDLE / "train.json"), *layers], dataset_dir="unused")
    infer = bundle_config_parser([str(BUNDLE / "inference.json"), *layers], dataset_dir="unused")
    for parser in (train, infer):
        parser.parse()
    assert train.get_parsed_content("geometry") == infer.get_parsed_content("geometry")
    assert train.get_parsed_content("scoring") == infer.get_parsed_content("scoring")
    train_net, infer_net = train.get_parsed_content("network_def"), infer.get_parsed_content("bigan_def")
    assert {k: v.shape for k, v in train_net.state_dict().items()} == {
        k: v.shape for k, v in infer_net.state_dict().items()
    }


@pytest.mark.parametrize("slice_dim", [0, 2])
def test_training_cuts_slices_along_slice_dim(slice_dim):
    parser = bundle_config_parser(str(BUNDLE / "train.json"), dataset_dir="unused", slice_dim=slice_dim)
    parser.parse()
    (crop,) = [
        t for t in parser.get_parsed_content("train#preprocessing").transforms if isinstance(t, RandCropByPosNegLabeld)
    ]
    expected = [-1, -1, -1]
    expected[slice_dim] = 1
    assert list(crop.cropper.spatial_size) == expected
    assert parser.get_parsed_content("inferer").spatial_dim == slice_dim


def test_configs_read_from_another_working_directory(tmp_path):
    """The shared-config macros name paths from the repository root; Python callers may run anywhere."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        parser = bundle_config_parser(str(BUNDLE / "inference.json"), dataset_dir="unused")
        parser.parse()
        assert parser.get_parsed_content("geometry").mode == "slices"
    finally:
        os.chdir(cwd)
    with pytest.raises(Exception):  # the plain MONAI parser resolves macros from the working directory only
        os.chdir(tmp_path)
        try:
            plain = ConfigParser()
            plain.read_config(str(BUNDLE / "inference.json"))
            plain.parse()
        finally:
            os.chdir(cwd)
    assert Path(cwd) == Path.cwd()


@pytest.mark.parametrize("configs", [["train.json"], ["inference.json"], ["inference.json", "evaluate.json"]])
def test_the_default_data_set_is_the_demo_data(configs, monkeypatch, tmp_path):
    """Without --dataset_dir every workflow makes (or reuses) the demo data under bundle_root, as command 1 does."""
    import monai_bigan.data.demo as demo

    calls = []
    monkeypatch.setattr(demo, "ensure_demo_data", lambda output_dir, **kwargs: calls.append(output_dir) or output_dir)
    parser = bundle_config_parser([str(BUNDLE / c) for c in configs], bundle_root=str(tmp_path))
    parser.parse()
    assert parser.get_parsed_content("dataset_dir") == str(tmp_path) + "/data/demo" and len(calls) == 1


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_input_size_limit_is_a_bundle_key(config):
    """``--max_input_voxels`` reaches the header check of training and inference (the size message names the key)."""
    default = bundle_config_parser(str(BUNDLE / config), dataset_dir="unused")
    assert default.get_parsed_content("scan_transforms")[0].max_voxels == 64_000_000
    raised = bundle_config_parser(str(BUNDLE / config), dataset_dir="unused", max_input_voxels=123)
    assert raised.get_parsed_content("scan_transforms")[0].max_voxels == 123
