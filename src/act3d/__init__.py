"""act3d: ACT (Autoencoders as Cross-Modal Teachers) for point clouds in plain PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__"]
