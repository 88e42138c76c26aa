"""Experiments as data: YAML files loaded into frozen dataclasses (recipe, grid, measurement, trials).

Every key is checked: an unknown key or a wrong type ends in one line naming the key and the file. A trial's
identity is a hash of its resolved configuration, so a re-run recognises what is already done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwsbench import settings
from kwsbench.errors import ConfigError
from kwsbench.specs import DatasetSpec
from kwsbench.typecheck import fits, type_name


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; the defaults are the BC-ResNet paper's recipe (PAPER.md section 3).

    ``spec_augment`` "auto" takes the paper's per-width frequency-mask parameter for BC-ResNet (off at
    τ = 1) and leaves SpecAugment off for other families; "off" disables it; "on" uses the width rule.
    ``fast`` trains the reformulated model (same function and parameters, faster on CPU).
    """

    epochs: int = 200
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_epochs: int = 5
    label_smoothing: float = 0.0
    time_shift_ms: float = 100.0
    noise_probability: float = 0.8
    spec_augment: str = "auto"
    eval_batch_size: int = 500
    fast: bool = True

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": 0 <= self.warmup_epochs,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "time_shift_ms": self.time_shift_ms >= 0,
            "noise_probability": 0 <= self.noise_probability <= 1,
            "spec_augment": self.spec_augment in ("auto", "on", "off"),
            "eval_batch_size": self.eval_batch_size >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"recipe {bad[0]}={getattr(self, bad[0])!r} is out of range; see `kwsbench train --help`"
            )


@dataclass(frozen=True)
class Measure:
    """What is measured on each trained model: latency on these backends at this many threads, batch 1, and
    with ``stream_hours`` > 0 streaming detection (``kwsbench stream-eval``): that many hours of the trial's
    test-split clips over the dataset's noise at ``stream_snr_db``, false rejections at 0.5, 1 and 2 FA/h."""

    backends: tuple[str, ...] = ("eager", "optimized")
    threads: int = 1
    stream_hours: float = 0.0
    stream_snr_db: float = 10.0

    def __post_init__(self) -> None:
        if not self.stream_hours >= 0:
            raise ConfigError(f"measure stream_hours={self.stream_hours!r} must be >= 0 (0: no stream-eval)")


def _resolved(path: Path | None) -> str | None:
    """An absolute data folder; None (a generated layout's default set) stays None."""
    return str(Path(path).resolve()) if path is not None else None


@dataclass(frozen=True)
class TrialConfig:
    """One fully resolved trial: a model with its options, trained under a recipe on a dataset with a seed."""

    experiment: str
    model: str
    options: Mapping[str, Any]
    recipe: Recipe
    dataset: DatasetSpec
    seed: int
    measure: Measure = field(default_factory=Measure)

    def identity(self) -> dict[str, Any]:
        """What defines the trial's result (device and threads do not: they change speed, not the model)."""
        return {
            "model": self.model,
            "options": dict(sorted(self.options.items())),
            "recipe": dataclasses.asdict(self.recipe),
            "dataset": {**self.dataset.to_dict(), "data_dir": _resolved(self.dataset.data_dir)},
            "seed": self.seed,
        }

    @property
    def trial_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """A readable name: model, options and seed (``bcresnet_1 use_subspectral_norm=False seed 0``)."""
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        recipe = {k: v for k, v in dataclasses.asdict(self.recipe).items() if getattr(Recipe(), k) != v}
        parts = [self.model, opts, " ".join(f"{k}={v}" for k, v in recipe.items()), f"seed {self.seed}"]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class Experiment:
    """A grid of models x registry overrides x recipe overrides x seeds on one dataset."""

    name: str
    dataset: DatasetSpec
    models: tuple[str, ...]
    options: tuple[Mapping[str, Any], ...] = ({},)
    recipes: tuple[Mapping[str, Any], ...] = ({},)
    seeds: tuple[int, ...] = (0,)
    recipe: Recipe = field(default_factory=Recipe)
    measure: Measure = field(default_factory=Measure)
    device: str = "cpu"
    threads: int = 2
    source: str = ""

    def trials(self) -> list[TrialConfig]:
        """Every trial of the grid, in a stable order: models, then options, recipes, seeds."""
        out = []
        for model, options, recipe, seed in itertools.product(
            self.models, self.options, self.recipes, self.seeds
        ):
            out.append(
                TrialConfig(
                    experiment=self.name,
                    model=model,
                    options=dict(options),
                    recipe=dataclasses.replace(self.recipe, **recipe),
                    dataset=self.dataset,
                    seed=seed,
                    measure=self.measure,
                )
            )
        return out


def make_dataclass(cls: type, values: object, where: str, section: str) -> Any:
    """``cls(**values)`` with every key and type checked; errors name the key and ``where`` (the file)."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: {section} must be a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {section}.{key}; the keys are: {', '.join(names)}")
        if not fits(value, hints[key]):
            raise ConfigError(f"{where}: {section}.{key}: {value!r} is not {type_name(hints[key])}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


_TOP_KEYS = ("name", "dataset", "grid", "recipe", "measure", "device", "threads")
_GRID_KEYS = ("models", "options", "recipes", "seeds")


def _expand(value: object) -> object:
    """``${VAR}`` in strings; ``KWSBENCH_SHARED_DATA`` defaults to the shared data folder."""
    if isinstance(value, str):
        env = dict(os.environ)
        env.setdefault("KWSBENCH_SHARED_DATA", str(settings.shared_data_dir()))
        return os.path.expandvars(value.replace("${KWSBENCH_SHARED_DATA}", env["KWSBENCH_SHARED_DATA"]))
    if isinstance(value, Mapping):
        return {k: _expand(v) for k, v in value.items()}
    return value


def _list_of(value: object, where: str, key: str, kind: type) -> tuple:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if kind is int and not fits(item, int):
            raise ConfigError(f"{where}: grid.{key}: {item!r} is not a whole number")
        if kind is str and not isinstance(item, str):
            raise ConfigError(f"{where}: grid.{key}: {item!r} is not a model name")
        if kind is dict and not isinstance(item, Mapping):
            raise ConfigError(f"{where}: grid.{key}: {item!r} is not a mapping of overrides")
    if not items:
        raise ConfigError(f"{where}: grid.{key} is empty; give at least one entry")
    return tuple(items)


def experiment_from_dict(values: object, where: str = "<experiment>") -> Experiment:
    """An ``Experiment`` from a parsed YAML mapping; see ``experiments/*.yaml`` for the format."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: an experiment file is a mapping with keys {', '.join(_TOP_KEYS)}")
    unknown = [k for k in values if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]}; the keys are: {', '.join(_TOP_KEYS)}")
    for required in ("dataset", "grid"):
        if required not in values:
            raise ConfigError(f"{where}: missing key {required}")
    name = values.get("name", Path(where).stem)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    dataset = DatasetSpec.from_dict(_expand(values["dataset"]), where=f"{where}: dataset.")
    if dataset.data_dir is None:
        from kwsbench.data.datasets import get_layout

        # Only a layout that generates its data has a default folder; say so now, naming the file.
        if not get_layout(dataset.dataset).generated:
            raise ConfigError(
                f"{where}: dataset.data_dir: required for dataset {dataset.dataset}; name its root folder"
            )
    grid = values["grid"]
    if not isinstance(grid, Mapping):
        raise ConfigError(f"{where}: grid must be a mapping with keys {', '.join(_GRID_KEYS)}")
    unknown = [k for k in grid if k not in _GRID_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key grid.{unknown[0]}; the keys are: {', '.join(_GRID_KEYS)}")
    if "models" not in grid:
        raise ConfigError(f"{where}: missing key grid.models")
    recipe = make_dataclass(Recipe, values.get("recipe"), where, "recipe")
    recipes = _list_of(grid.get("recipes", [{}]), where, "recipes", dict)
    for i, overrides in enumerate(recipes):
        make_dataclass(Recipe, {**dataclasses.asdict(recipe), **overrides}, where, f"grid.recipes[{i}]")
    device = values.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"{where}: device must be cpu or cuda, got {device!r}")
    threads = values.get("threads", 2)
    if not fits(threads, int) or threads < 1:
        raise ConfigError(f"{where}: threads must be a whole number of at least 1, got {threads!r}")
    experiment = Experiment(
        name=name,
        dataset=dataset,
        models=_list_of(grid["models"], where, "models", str),
        options=_list_of(grid.get("options", [{}]), where, "options", dict),
        recipes=recipes,
        seeds=_list_of(grid.get("seeds", [0]), where, "seeds", int),
        recipe=recipe,
        measure=make_dataclass(Measure, values.get("measure"), where, "measure"),
        device=device,
        threads=threads,
        source=where,
    )
    _check_models(experiment, where)
    return experiment


def _check_models(experiment: Experiment, where: str) -> None:
    """Every model name and option exists (types are checked when each trial builds its model)."""
    from kwsbench.measure.backend_names import BACKENDS
    from kwsbench.models import model_info

    for name in experiment.models:
        try:
            info = model_info(name)
        except ConfigError as err:
            raise ConfigError(f"{where}: grid.models: {err}") from None
        except Exception as err:  # ModelError: unknown name with close matches
            raise ConfigError(f"{where}: grid.models: {err}") from None
        for options in experiment.options:
            bad = [k for k in options if k not in info.options()]
            if bad:
                raise ConfigError(
                    f"{where}: grid.options: model {name!r} has no option {bad[0]!r}; "
                    f"its options are: {', '.join(info.options())}"
                )
    bad = [b for b in experiment.measure.backends if b not in BACKENDS]
    if bad:
        raise ConfigError(
            f"{where}: measure.backends: unknown backend {bad[0]!r}; choose from {', '.join(BACKENDS)}"
        )


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and check an experiment YAML file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file; see experiments/ for examples") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the experiment file ({err})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the syntax") from None
    return experiment_from_dict(values, str(path))
