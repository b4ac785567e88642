"""The model zoo: the families by name (generic ones and the papers' CIFAR-10 networks) and initializers."""
from genlab.models.init import INITIALIZERS, init_layer, initialize
from genlab.models.zoo import MODELS, build_model, param_count, param_layers, resolve_init

__all__ = ["MODELS", "build_model", "param_count", "param_layers", "resolve_init", "INITIALIZERS", "init_layer",
           "initialize"]
