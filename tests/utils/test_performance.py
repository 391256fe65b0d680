from __future__ import annotations

import pytest
import torch

from monai_bigan.utils import amp_dtype, channels_last_kwargs, compile_networks
from tests.conftest import tiny_bigan


def test_amp_dtype_choice():
    assert amp_dtype("cpu") == torch.float16  # no bf16 GPU: fp16 with loss scaling
    assert amp_dtype("cpu", "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="amp dtype"):
        amp_dtype("cpu", "int8")


def test_channels_last_only_for_2d():
    assert channels_last_kwargs(True, 2) == {"memory_format": torch.channels_last}
    assert channels_last_kwargs(True, 3) == {} and channels_last_kwargs(False, 2) == {}
    x = torch.rand(2, 1, 16, 16).to(**channels_last_kwargs(True, 2))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_compile_networks_compiles_each_submodule_in_place(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    net = tiny_bigan(2)
    keys = list(net.state_dict())
    compile_networks(net, None, enabled=True)
    assert compiled == ["Encoder", "Generator", "JointDiscriminator"]
    assert list(net.state_dict()) == keys  # checkpoints keep their keys
    compiled.clear()
    compile_networks(net, enabled=False)
    assert compiled == []
