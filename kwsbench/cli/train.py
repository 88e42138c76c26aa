"""`kwsbench train` (one model under the paper's recipe) and `kwsbench evaluate` (a checkpoint or an exported model on any data)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from kwsbench.cli.common import add_common, emit, positive_int, subparser
from kwsbench.cli.data import add_dataset_options, dataset_spec
from kwsbench.errors import ConfigError


def parse_set(items: list[str] | None) -> dict[str, object]:
    """``--set key=value`` overrides, values read as YAML scalars (``false``, ``2.5``, ``5``, ``avg``)."""
    import yaml

    out: dict[str, object] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set use_subspectral_norm=false")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kwsbench.runner.config import Measure, Recipe, TrialConfig, make_dataclass
    from kwsbench.runner.loop import CHECKPOINT_NAME, METRICS_NAME, RESUME_NAME, describe_outcome, train_trial

    out = Path(args.out)
    if (out / METRICS_NAME).is_file() and (out / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"{out}: holds a finished training run already; choose another --out")
    if (out / RESUME_NAME).is_file() and not args.resume:
        raise ConfigError(
            f"{out}: holds an interrupted run; pass --resume to continue it or choose another --out"
        )
    recipe_values = {k: v for k, v in dataclasses.asdict(Recipe()).items()}
    recipe_values.update(parse_set(args.recipe))
    for name in ("epochs", "lr", "batch_size"):
        if getattr(args, name) is not None:
            recipe_values[name] = getattr(args, name)
    config = TrialConfig(
        experiment="train",
        model=args.model,
        options=parse_set(args.set),
        recipe=make_dataclass(Recipe, recipe_values, "command line", "recipe"),
        dataset=dataset_spec(args),
        seed=args.seed,
        measure=Measure(),
    )
    from kwsbench.models import create_model

    # An unknown model or a bad override fails here, before any data work.
    create_model(config.model, **config.options)
    try:
        outcome = train_trial(config, out, device=args.device, threads=args.threads, cache_dir=args.cache_dir)
    except KeyboardInterrupt:
        saved = (out / RESUME_NAME).is_file()
        where = f"the last completed epoch is in {out / RESUME_NAME}" if saved else "no epoch had completed"
        print(
            f"\nkwsbench: interrupted; {where}: run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    return emit(outcome.metrics, args.json, lambda _: describe_outcome(outcome))


def _evaluate(args: argparse.Namespace) -> int:
    from kwsbench.runner.evaluate import evaluate_checkpoint, evaluate_exported, format_evaluation

    if args.model_file is not None:
        if args.device != "cpu":
            raise ConfigError(
                f"--device {args.device}: an exported model runs on a CPU runtime (--runtime); drop --device"
            )
        result = evaluate_exported(
            args.model_file, dataset_spec(args), args.split, cache_dir=args.cache_dir, runtime=args.runtime
        )
    elif args.runtime is not None:
        raise ConfigError("--runtime applies to --model-file; a checkpoint runs on PyTorch (--device)")
    else:
        result = evaluate_checkpoint(
            args.checkpoint, dataset_spec(args), args.split, cache_dir=args.cache_dir, device=args.device
        )
    return emit(result, args.json, format_evaluation)


def register(sub) -> None:
    train = subparser(
        sub, "train", "train one model with the paper's recipe; keeps the best-validation checkpoint"
    )
    train.add_argument("--model", required=True, help="a registered model name (see `kwsbench models`)")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a model option, e.g. tau=2.5 (repeatable)"
    )
    train.add_argument(
        "--recipe", action="append", metavar="KEY=VALUE",
        help="a recipe override, e.g. warmup_epochs=2 or spec_augment=off (repeatable; see kwsbench.runner.config.Recipe)",
    )  # fmt: skip
    add_dataset_options(train)
    train.add_argument(
        "--epochs", type=positive_int, default=None, help="training epochs (default: 200, the paper's)"
    )
    train.add_argument("--batch-size", type=positive_int, default=None, help="clips per step (default: 100)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.1)")
    train.add_argument("--seed", type=int, default=0, help="model init, data order and augmentation seed")
    train.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where to train (features too)"
    )
    train.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    train.add_argument("--cache-dir", default=None, help="clip cache folder (default: $KWSBENCH_CACHE)")
    train.add_argument("--out", required=True, help="folder for checkpoint.pt and metrics.json")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_common(train, json_help="print metrics.json instead of a summary")
    train.set_defaults(func=_train)

    evaluate = subparser(
        sub,
        "evaluate",
        "accuracy, per-class accuracy and confusion of a checkpoint or exported model on any data",
    )
    model = evaluate.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a checkpoint.pt written by `kwsbench train` or `run`")
    model.add_argument(
        "--model-file",
        help="an ONNX model written by `kwsbench export` (its JSON beside it), run on --runtime",
    )
    add_dataset_options(evaluate)
    evaluate.add_argument(
        "--split", choices=("test", "validation", "train", "all"), default="test", help="which clips"
    )
    evaluate.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to evaluate")
    evaluate.add_argument(
        "--runtime", choices=("onnxruntime", "openvino"), default=None,
        help="the runtime of a --model-file (default: onnxruntime)",
    )  # fmt: skip
    evaluate.add_argument("--cache-dir", default=None, help="clip cache folder (default: $KWSBENCH_CACHE)")
    add_common(evaluate, json_help="print one JSON object (accuracy, per_class, confusion, clips)")
    evaluate.set_defaults(func=_evaluate)
