"""Which trials ran the same network: a registered model name plus its overrides, reduced to one variant.

``bcresnet_1`` with ``use_subspectral_norm=false`` and ``table2_no_ssn`` build the same network, so a report
must pair them. The registry knows that, but it imports torch; this module restates, as plain data, the
presets of the registered families whose variants the paper compares (each preset's options and each
family's constructor defaults). ``tests/report/test_variants.py`` builds every preset both ways through the
registry and checks that the networks are identical, so this table cannot drift from the models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Constructor defaults of the families (BCResNet and ResNetDS keyword options, num_classes aside).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "bcresnet": {
        "tau": 1.0,
        "base_channels": None,
        "n_mels": 40,
        "use_subspectral_norm": True,
        "num_subbands": 5,
        "use_aux_residual": True,
        "use_shortcut": True,
        "frequency_pool": "avg",
        "broadcast": "add",
        "dropout": 0.1,
        "temporal_padding": "same",
    },
    "resnet_ds": {
        "dims": 2,
        "width": 1.0,
        "n_mels": 40,
        "use_subspectral_norm": False,
        "num_subbands": 5,
        "dropout": 0.1,
    },
}

# Registered model name -> (family, the options its constructor sets over the family's defaults).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "bcresnet_1": ("bcresnet", {"tau": 1.0}),
    "bcresnet_1_5": ("bcresnet", {"tau": 1.5}),
    "bcresnet_2": ("bcresnet", {"tau": 2.0}),
    "bcresnet_3": ("bcresnet", {"tau": 3.0}),
    "bcresnet_6": ("bcresnet", {"tau": 6.0}),
    "bcresnet_8": ("bcresnet", {"tau": 8.0}),
    "table2_attention": ("bcresnet", {"broadcast": "attention"}),
    "table2_no_aux_residual": ("bcresnet", {"use_aux_residual": False}),
    "table2_no_shortcut": ("bcresnet", {"use_shortcut": False}),
    "table2_no_ssn": ("bcresnet", {"use_subspectral_norm": False}),
    "table2_no_ssn_w1_125": ("bcresnet", {"tau": 1.125, "use_subspectral_norm": False}),
    "table2_no_aux_residual_no_ssn": ("bcresnet", {"use_aux_residual": False, "use_subspectral_norm": False}),
    "table2_freq_maxpool": ("bcresnet", {"frequency_pool": "max"}),
    "resnet1d_w2": ("resnet_ds", {"dims": 1, "width": 2.0}),
    "resnet2d_w1": ("resnet_ds", {"dims": 2, "width": 1.0}),
    "resnet2d_w1_ssn": ("resnet_ds", {"dims": 2, "width": 1.0, "use_subspectral_norm": True}),
}


def _normalised(value: Any, default: Any) -> Any:
    # JSON and YAML write tau 2 for 2.0: a whole number where the default is a float is that float.
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        return tuple(value)
    return value


@dataclass(frozen=True, order=True)
class Variant:
    """One network: a family and every option of it, sorted (families the table does not know: as given)."""

    family: str
    options: tuple[tuple[str, Any], ...]

    def option(self, name: str) -> Any:
        return dict(self.options).get(name)

    def without(self, name: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The variant's identity with one option left out (the rest of an ablation)."""
        return self.family, tuple((k, v) for k, v in self.options if k != name)


def variant_of(model: str, options: Mapping[str, Any] | None = None) -> Variant:
    """The variant a trial of ``model`` with registry ``options`` trained."""
    options = dict(options or {})
    if model not in PRESETS:
        return Variant(model, tuple(sorted((k, _normalised(v, None)) for k, v in options.items())))
    family, preset = PRESETS[model]
    defaults = FAMILY_DEFAULTS[family]
    merged = {**defaults, **preset}
    for key, value in options.items():
        merged[key] = _normalised(value, defaults.get(key))
    return Variant(family, tuple(sorted(merged.items())))


def preset_name(variant: Variant) -> str | None:
    """The registered model that is exactly this variant with no override, if there is one."""
    for name in PRESETS:
        if variant_of(name) == variant:
            return name
    return None


def describe(model: str, options: Mapping[str, Any] | None = None) -> str:
    """A trial's variant as its user wrote it: ``bcresnet_1 use_subspectral_norm=False``."""
    parts = [model] + [f"{k}={v}" for k, v in sorted((options or {}).items())]
    return " ".join(parts)
