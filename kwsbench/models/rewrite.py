"""One tree walker and the hooks through which blocks rewrite themselves for inference and for training.

Two rewriters turn a registered model into a faster form of the same function: the inference graph
(:func:`kwsbench.measure.optimize.inference_graph`) and the training reformulation
(:func:`kwsbench.models.reformulate.for_training`). Both walk the module tree with :func:`rewrite_tree`
and ask each module how it rewrites through the hooks of :class:`Rewritable`; a new block (or a streaming
variant of one) plugs in by implementing them, with no edit to either rewriter. PyTorch's own layers
cannot carry these hooks, so each rewriter keeps one table for them (Conv/BatchNorm folding, Dropout,
adaptive pooling, channels-last convolutions).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from torch import nn

Shape = tuple[int, ...]


@dataclass(frozen=True)
class InferenceContext:
    """What the inference rewriter learnt about each module from one eval forward pass on an example.

    Shapes are keyed by ``id`` of the module that saw them; a module not called on the example (or whose
    input or output is not a tensor) has none, and its hook should then leave it as it is.
    """

    input_shapes: Mapping[int, Shape] = field(default_factory=dict)
    output_shapes: Mapping[int, Shape] = field(default_factory=dict)

    def input_shape(self, module: nn.Module) -> Shape | None:
        """The shape of ``module``'s first input on the example, or ``None``."""
        return self.input_shapes.get(id(module))

    def output_shape(self, module: nn.Module) -> Shape | None:
        """The shape of ``module``'s output on the example, or ``None``."""
        return self.output_shapes.get(id(module))


@dataclass(frozen=True)
class TrainingContext:
    """Where the training rewriter is in the tree.

    ``channels_last``: this module or one enclosing it declares ``channels_last_safe``, so its
    convolutions may run on NHWC maps and hand NHWC maps on.
    """

    channels_last: bool = False


class Rewritable(Protocol):
    """The hooks a module class may implement; each is optional and looked up by name.

    ``for_inference(context)``: the eval-mode replacement of this module. The inference rewriter calls it
    on a private deep copy of the model, after the hooks of the module's children ran and before its
    generic Conv/BatchNorm folding, so PyTorch layers inside the module are still as the module built them
    (a replacement may contain ``conv -> BN`` pairs: they are folded afterwards). It may modify ``self``
    and return it. ``context.input_shape(self)`` gives the shapes seen on the example input.

    ``for_training(context)``: the training-time replacement of this module: the same function, sharing
    every parameter and buffer tensor of ``self`` (use :func:`share_module` or :func:`swap_class`), never
    modifying them. The training rewriter calls it on a private shallow copy whose children are already
    rewritten.

    ``channels_last_safe``: a class attribute; ``True`` declares that the ``forward`` of this module and
    of every module inside it accept maps in any memory layout (no ``.view`` of a convolution output, no
    stride arithmetic) and gain from NHWC, so that the training rewriter runs their convolutions
    channels-last. Undeclared modules keep NCHW.
    """

    channels_last_safe: ClassVar[bool]

    def for_inference(self, context: InferenceContext) -> nn.Module: ...

    def for_training(self, context: TrainingContext) -> nn.Module: ...


def declares_channels_last(module: nn.Module) -> bool:
    """Whether ``module``'s class declares ``channels_last_safe = True``."""
    return getattr(type(module), "channels_last_safe", False) is True


def share_module(module: nn.Module, cls: type[nn.Module] | None = None) -> nn.Module:
    """A new module object holding the same parameter and buffer tensors (and hooks) as ``module``.

    Its own ``_modules``/``_parameters``/``_buffers`` dicts let children be swapped without touching
    ``module``; ``cls`` (a subclass adding no state) changes only how it computes.
    """
    new = copy.copy(module)
    for key, value in vars(module).items():
        if isinstance(value, dict):
            setattr(new, key, type(value)(value))
    if cls is not None:
        new.__class__ = cls
    return new


def swap_class(module: nn.Module, expected: type[nn.Module], replacement: type[nn.Module]) -> nn.Module:
    """``module`` shared as a ``replacement`` when its class is exactly ``expected``, else ``module`` itself.

    Exact classes only: a subclass of ``expected`` may compute differently, and ``replacement`` only
    reproduces ``expected``'s forward.
    """
    return share_module(module, replacement) if type(module) is expected else module


Visit = Callable[[nn.Module, tuple[nn.Module, ...]], nn.Module]


def rewrite_tree(module: nn.Module, visit: Visit, *, share: bool = False) -> nn.Module:
    """``module`` rebuilt bottom-up: each child is rewritten first, then ``visit(node, ancestors)`` replaces the node.

    ``ancestors`` are the enclosing (rebuilt) modules, outermost first. With ``share=False`` the tree is
    rewritten in place (for a private copy); with ``share=True`` ``module`` is left unchanged and every node
    of the result is a new object sharing ``module``'s parameter and buffer tensors (``share_module``), so
    that switching one tree to eval mode does not switch the other. A module registered in several places
    is rewritten once and the result registered in all of them.
    """
    # id -> (original, result); holding the original keeps its id from being reused while the walk runs.
    done: dict[int, tuple[nn.Module, nn.Module]] = {}

    def walk(node: nn.Module, ancestors: tuple[nn.Module, ...]) -> nn.Module:
        if id(node) in done:
            return done[id(node)][1]
        new = share_module(node) if share else node
        inside = (*ancestors, new)
        for name, child in node._modules.items():
            if child is not None:
                new._modules[name] = walk(child, inside)
        result = visit(new, ancestors)
        done[id(node)] = (node, result)
        return result

    return walk(module, ())
