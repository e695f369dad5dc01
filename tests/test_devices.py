"""The default device: CUDA where torch sees a GPU, else the CPU."""

import torch

from coopt_flower.devices import default_device


def test_default_device_follows_torch(monkeypatch):
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
