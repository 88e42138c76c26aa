"""Model definitions and their registry. Importing this package registers every family."""

from kwsbench.models import (  # noqa: F401  (registration side effects)
    bcresnet,
    dscnn,
    kwt,
    matchboxnet,
    resnet_ablation,
    resnet_kws,
    tcresnet,
)
from kwsbench.models.registry import (
    Declared,
    DeclaredAccuracy,
    InputSpec,
    ModelInfo,
    Reference,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "Declared",
    "DeclaredAccuracy",
    "InputSpec",
    "ModelInfo",
    "Reference",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
