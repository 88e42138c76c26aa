"""Test helper: models under which every layer matters, and float32 tolerances derived from float64 runs.

A freshly initialised model is a poor witness for parity tests: PyTorch's default initialisation shrinks the
signal layer after layer and BatchNorm's running statistics (0, 1) do not match the activations, so the logits
barely depend on the input (BC-ResNet-1: two inputs give logits 2e-6 apart) and a wrong fused constant hides
under any tolerance. :func:`calibrate` gives a model He-normal convolution / linear weights, random
normalisation affine parameters and running statistics averaged over a few random batches, so that every layer
keeps its input's scale and changes its output.

Importable as ``calibrated`` from any test: pytest's default ``prepend`` import mode puts ``tests/`` (the
folder of the root ``conftest.py``, which has no ``__init__.py``) on ``sys.path`` before it imports a test.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kwsbench.measure.bench import seeded_input
from kwsbench.models import create_model, model_info

EPS32 = torch.finfo(torch.float32).eps
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    *,
    inputs: list[torch.Tensor] | None = None,
    seed: int = 0,
    batches: int = 4,
    batch_size: int = 16,
) -> nn.Module:
    """In place and seeded: He-normal weights, random norm affines, then running statistics averaged over
    ``inputs`` (default: ``batches`` standard-normal batches ``(batch_size, *input_shape[1:])``, the
    distribution of the bench protocol's input). Returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(shape, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    handled: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            # He-normal (fan-in, ReLU gain): each layer keeps the scale of its input instead of shrinking it.
            fan_in = module.weight[0].numel()
            module.weight.copy_(normal(module.weight.shape, (2.0 / fan_in) ** 0.5))
            if module.bias is not None:
                module.bias.copy_(uniform(module.bias.shape, -0.5, 0.5))
        elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
            # Scales away from 1 and shifts away from 0, so that a dropped or misplaced affine shows.
            module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))
            module.bias.copy_(uniform(module.bias.shape, -0.5, 0.5))
        else:
            continue
        handled.update(id(p) for p in module.parameters(recurse=False))
    for parameter in model.parameters():
        if id(parameter) not in handled:  # e.g. KWT's class token and position embedding
            # Unit scale, like the He-normal projections these are added to.
            parameter.copy_(normal(parameter.shape, 1.0))

    if inputs is None:
        assert input_shape is not None, "calibrate needs input_shape or inputs"
        inputs = [torch.randn((batch_size, *input_shape[1:]), generator=generator) for _ in range(batches)]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every calibration batch
    model.train()
    for module in model.modules():
        if isinstance(module, _DROPOUT):
            module.eval()  # the statistics of the network inference runs, every channel present
    for batch in inputs:
        model(batch)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def calibrated_model(name: str, batch: int = 2, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A registered model, calibrated, in eval mode, and the bench protocol's seeded input ``(batch, ...)``."""
    shape = model_info(name).input.shape(batch)
    torch.manual_seed(seed)  # the constructor's own initialisation is overwritten, but stays reproducible
    model = calibrate(create_model(name), shape, seed=seed)
    return model, seeded_input(shape, seed)


@torch.no_grad()
def float64_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's exact-arithmetic reference: a float64 copy run on ``x`` in float64."""
    return copy.deepcopy(model).double()(x.double())


@torch.no_grad()
def float32_error(model: nn.Module, x: torch.Tensor) -> float:
    """Eager PyTorch's own rounding on ``x``: ``max |model(x) - float64 model(x)|``, at least one float32
    step of the largest output (no evaluation is more exact than its output's representation)."""
    exact = float64_output(model, x)
    error = (model(x).double() - exact).abs().max().item()
    return max(error, EPS32 * exact.abs().max().item())


@torch.no_grad()
def fused_float32_error(model: nn.Module, x: torch.Tensor) -> float:
    """The rounding of the model's inference form (BatchNorm folded into convolutions, as kwsbench's
    ``inference_graph`` and the runtimes' graph optimisers both do) on ``x``.

    Folding changes the conditioning: a shift folded into a bias next to a large scaled weight cancels in
    float32. Measured as the graph's own arithmetic rounding (float32 against a float64 copy of the same
    constants) plus the rounding of its constants to float32 (the graph built from the float64 model). Both
    parts compare the graph with itself, so a wrong folded constant cannot widen the tolerance it is held to.
    """
    from kwsbench.measure.optimize import inference_graph

    graph32 = inference_graph(model, tuple(x.shape))
    graph64 = inference_graph(copy.deepcopy(model).double(), tuple(x.shape))
    same_constants = copy.deepcopy(graph32).double()(x.double())
    arithmetic = (graph32(x).double() - same_constants).abs().max().item()
    constants = (same_constants - graph64(x.double())).abs().max().item()
    return arithmetic + constants


def parity_atol(model: nn.Module, x: torch.Tensor) -> float:
    """Largest ``|output - float64 output|`` any float32 runtime may show for ``model`` on ``x``.

    Every runtime rounds the same function; eager's rounding and that of the folded form are measured
    (:func:`float32_error`, :func:`fused_float32_error`). What a runtime may change is the summation order,
    and the worst case is a long reduction (a 4,040-term global mean, a 770-term dot product) summed in one
    accumulator instead of PyTorch's 16 AVX-512 float32 lanes: the rounding of a sequential sum of n
    like-signed terms grows as n^1.5, that of 16 lanes of n / 16 terms as 16^0.5 (n / 16)^1.5, a ratio of
    16. Hence 16x the measured rounding (OpenVINO's Res15 mean shows 9x on an AMD EPYC); a 1e-3 error in one
    folded constant still moves a calibrated model's logits 2-200x beyond it.
    """
    return 16.0 * max(float32_error(model, x), fused_float32_error(model, x))
