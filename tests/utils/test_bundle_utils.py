"""Tests of the helpers that the bundle configs call."""

from __future__ import annotations

import pytest

from monai_bigan.utils import as_bool


@pytest.mark.parametrize("value", [True, 1, "true", "True", " yes ", "on", "1"])
def test_as_bool_true(value):
    assert as_bool(value) is True


@pytest.mark.parametrize("value", [False, 0, "false", "False", "no", "off", "0"])
def test_as_bool_false(value):
    assert as_bool(value) is False


def test_as_bool_rejects_other_strings():
    with pytest.raises(ValueError, match="boolean"):
        as_bool("maybe")
