"""fnet: functional neural networks from scratch in JAX, with hand-written backward passes."""

from fnet import gradcheck, init, layers, losses, nets
from fnet.nets import MLPConfig, Net, mlp

__version__ = "0.1.0"

__all__ = ["MLPConfig", "Net", "gradcheck", "init", "layers", "losses", "mlp", "nets"]
