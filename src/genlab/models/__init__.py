"""Model families by name (MLP, LeNet-style CNN, 1-D CNN, small residual net) and initializers."""
from genlab.models.zoo import MODELS, build_model, param_layers
from genlab.models.init import INITIALIZERS, init_layer, initialize

__all__ = ["MODELS", "build_model", "param_layers", "INITIALIZERS", "init_layer", "initialize"]
