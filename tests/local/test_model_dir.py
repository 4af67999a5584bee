"""The shared helpers for local Hugging Face models: the device a setting names."""

from __future__ import annotations

import pytest
import torch

from aepo.model_dir import resolve_device


@pytest.mark.parametrize("has_gpu, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_device_is_the_gpu_when_there_is_one(monkeypatch, has_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.parametrize("name", ["cpu", "cuda:1"])
def test_a_named_device_is_taken_as_given(name):
    assert resolve_device(name) == torch.device(name)
