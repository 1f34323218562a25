"""act3d: ACT (Autoencoders as Cross-Modal Teachers) for point clouds in plain PyTorch.

The top level stays light (no torch import) so ``act3d --help`` is quick; the public
helpers below are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_encoder", "save_encoder"]


def __getattr__(name: str) -> Any:
    if name in ("load_encoder", "save_encoder"):
        from act3d.models import encoder_api

        return getattr(encoder_api, name)
    raise AttributeError(f"module 'act3d' has no attribute {name!r}")
