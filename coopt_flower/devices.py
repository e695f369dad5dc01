"""Where work runs when nobody says: the one place that asks torch whether there is a GPU."""

from __future__ import annotations

__all__ = ["default_device"]


def default_device() -> str:
    """``"cuda"`` when this machine has a CUDA GPU, else ``"cpu"``.

    torch is imported here, not at module level, so that callers which only parse settings
    (a run config, a command line's defaults) stay light until a device is asked for.
    """
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
