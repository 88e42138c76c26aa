"""The model registry: one decorator registers a constructor with the metadata reports need.

Every registered model takes features shaped ``(B, 1, n_features, frames)`` (the frontend's output) and
returns logits ``(B, num_classes)``; a family that wants another layout (TC-ResNet's MFCC-as-channels,
KWT's tokens) rearranges inside its own ``forward``. The metadata keeps what the model's paper declared
next to the count measured on its public reference code, so a report can show both with their sources.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from kwsbench.errors import ModelError
from kwsbench.specs import InputSpec  # noqa: F401  (re-exported: families declare their input with it)
from kwsbench.typecheck import fits, type_name


@dataclass(frozen=True)
class DeclaredAccuracy:
    """A top-1 test accuracy (%) a paper reports; ``std`` over ``seeds`` runs where it gives one."""

    dataset: str  # "gsc_v1_12" or "gsc_v2_12" (12-class protocol, official test set)
    top1: float
    std: float | None = None
    seeds: int | None = None
    source: str = ""


@dataclass(frozen=True)
class Declared:
    """What a model's paper states, as stated and converted to plain counts.

    ``macs`` is multiply-accumulates; ``macs_stated`` keeps the paper's wording (papers say "mult", "ops" or
    "FLOPs" and some mean 2 x MACs); ``macs_counting`` says which ops the paper's figure covers.
    """

    source: str
    params: int | None = None
    params_stated: str = ""
    macs: int | None = None
    macs_stated: str = ""
    macs_counting: str = ""
    accuracy: tuple[DeclaredAccuracy, ...] = ()
    configuration: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Reference:
    """Counts measured on a rebuild of the model's public reference code (../shared/docs/PAPER.md).

    ``exact`` means kwsbench's model must have exactly ``params`` trainable parameters; otherwise the test
    holds it to ``param_tolerance`` (relative) against the declared count.
    """

    params: int | None = None
    macs_total: int | None = None  # fvcore total, eval mode, declared input
    macs_conv: int | None = None  # conv/linear/matmul only
    source: str = ""
    exact: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its constructor, the input it expects and the figures it is held against."""

    name: str
    family: str
    citation: str
    input: InputSpec
    declared: Declared
    reference: Reference = field(default_factory=Reference)
    param_tolerance: float = 0.05
    constructor: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)
    description: str = ""

    def options(self) -> list[str]:
        """The keyword overrides the constructor accepts (besides ``num_classes``)."""
        return list(self.option_types())

    def option_types(self) -> dict[str, object]:
        """Each keyword override with its annotated type (``object`` where none is annotated)."""
        if self.constructor is None:
            raise ModelError(f"model {self.name!r} has no constructor registered")
        found = _keyword_options(self.constructor)
        params = inspect.signature(self.constructor).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            # A constructor that forwards **options: the model class in its return annotation lists them.
            cls = typing.get_type_hints(self.constructor).get("return")
            if isinstance(cls, type):
                for name, hint in _keyword_options(cls.__init__).items():
                    found.setdefault(name, hint)
        return found


def _keyword_options(fn: Callable) -> dict[str, object]:
    params = inspect.signature(fn).parameters
    hints = typing.get_type_hints(fn)
    return {
        p: hints.get(p, object)
        for p in params
        if p != "num_classes" and params[p].kind is inspect.Parameter.KEYWORD_ONLY
    }


@dataclass
class _Registry:
    models: dict[str, ModelInfo] = field(default_factory=dict)


_REGISTRY = _Registry()


def register_model(
    *,
    family: str,
    citation: str,
    input: InputSpec,
    declared: Declared,
    reference: Reference | None = None,
    param_tolerance: float = 0.05,
    description: str = "",
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model constructor ``fn(num_classes=12, *, option=...) -> nn.Module`` under its name."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY.models:
            raise ValueError(f"model {key!r} registered twice")
        _REGISTRY.models[key] = ModelInfo(
            name=key,
            family=family,
            citation=citation,
            input=input,
            declared=declared,
            reference=reference or Reference(),
            param_tolerance=param_tolerance,
            constructor=fn,
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
        )
        return fn

    return decorate


def _ensure_loaded() -> None:
    # Importing the package runs every family module's decorators exactly once.
    import kwsbench.models  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, in registration order."""
    _ensure_loaded()
    return [n for n in _REGISTRY.models if fnmatch.fnmatchcase(n, pattern)]


def _unknown(name: str) -> ModelError:
    close = difflib.get_close_matches(name, list(_REGISTRY.models), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `kwsbench models` for the list"
    return ModelError(f"unknown model {name!r}: {hint}")


def model_info(name: str) -> ModelInfo:
    """The metadata of a registered model; an unknown name fails with the closest matches."""
    _ensure_loaded()
    if name not in _REGISTRY.models:
        raise _unknown(name)
    return _REGISTRY.models[name]


def create_model(name: str, num_classes: int = 12, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` are the constructor's keyword options (e.g. ``tau=2.5``)."""
    info = model_info(name)
    allowed = info.options()
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise ModelError(
            f"model {name!r} has no option {', '.join(map(repr, bad))}; its options are: {', '.join(allowed)}"
        )
    if not fits(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a whole number of at least 1, got {num_classes!r}")
    # Checked here, before any allocation: a string width ('2') would otherwise build a model with
    # int(8 * '2') = 22,222,222 channels and fail only after gigabytes.
    expected = info.option_types()
    for option, value in overrides.items():
        if not fits(value, expected[option]):
            raise ModelError(
                f"model {name!r} option {option}={value!r}: expected {type_name(expected[option])}"
                + (" (finite)" if expected[option] is float else "")
            )
    return info.constructor(num_classes=num_classes, **overrides)


def resolve_models(pattern: str) -> list[str]:
    """The registered names matching ``pattern``; none is a one-line error with the closest names."""
    names = list_models(pattern)
    if not names:
        close = difflib.get_close_matches(pattern, list(_REGISTRY.models), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `kwsbench models` for the list"
        raise ModelError(f"no registered model matches {pattern!r}; {hint}")
    return names
