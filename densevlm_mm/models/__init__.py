"""Models of DenseVLM: backbones (dense CLIP features), region sampler, retrieval, losses, algorithm."""
from .algorithms import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
