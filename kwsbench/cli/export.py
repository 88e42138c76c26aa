"""`kwsbench export`: a checkpoint as ONNX (log-mel inside on request, int8 on request), parity-checked."""

from __future__ import annotations

import argparse

from kwsbench.cli.common import add_common, emit, positive_int, subparser
from kwsbench.cli.data import add_dataset_options, dataset_spec
from kwsbench.errors import ConfigError


def _export(args: argparse.Namespace) -> int:
    from kwsbench.export.onnx import export_checkpoint, format_export

    if args.streaming:  # the step function with its state (log-mel inside, float32, 100 ms hop)
        from kwsbench.export.streaming import export_streaming_checkpoint, format_streaming_export

        if args.int8 or args.dataset is not None:
            raise ConfigError("--streaming exports the float32 step; drop --int8 and --dataset")
        return emit(
            export_streaming_checkpoint(args.checkpoint, args.out), args.json, format_streaming_export
        )
    if args.int8 and args.dataset is None:
        raise ConfigError(
            "--int8 needs a dataset to calibrate on and to measure the accuracy delta: "
            "add --dataset NAME --data-dir PATH"
        )
    if (args.dataset is None) != (args.data_dir is None):
        given, missing = ("--dataset", "--data-dir") if args.data_dir is None else ("--data-dir", "--dataset")
        raise ConfigError(f"{given} needs {missing} too; give both or neither")
    result = export_checkpoint(
        args.checkpoint,
        args.out,
        with_frontend=args.with_frontend,
        int8=args.int8,
        calibration=dataset_spec(args) if args.dataset is not None else None,
        cache_dir=args.cache_dir,
        calibration_clips=args.calibration_clips,
        seed=args.seed,
    )
    return emit(result, args.json, format_export)


def register(sub) -> None:
    from kwsbench.export.quantize import CALIBRATION_CLIPS

    export = subparser(
        sub, "export", "write a checkpoint as ONNX with a JSON beside it, checked against PyTorch"
    )
    export.add_argument(
        "--checkpoint", required=True, help="a checkpoint.pt written by `kwsbench train` or `run`"
    )
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the file format")
    export.add_argument(
        "--out", required=True, help="the .onnx file to write; the JSON goes beside it (same name, .json)"
    )
    export.add_argument(
        "--with-frontend",
        action="store_true",
        help="put the log-mel frontend inside: the model then takes (1, 16000) 16 kHz audio",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="ONNX Runtime static int8 quantisation calibrated on the dataset's training clips; "
        "reports the test-accuracy and latency deltas (needs --dataset)",
    )
    export.add_argument(
        "--streaming",
        action="store_true",
        help="the model's streaming step: 100 ms of audio and the state in, logits and the state out (a "
        "standard model's step scores the window ending 600 ms earlier, see kwsbench.stream.incremental)",
    )
    add_dataset_options(export, required=False)
    export.add_argument(
        "--calibration-clips", type=positive_int, default=CALIBRATION_CLIPS, help="training clips for --int8"
    )
    export.add_argument("--seed", type=int, default=0, help="which parity and calibration clips are drawn")
    export.add_argument("--cache-dir", default=None, help="clip cache folder (default: $KWSBENCH_CACHE)")
    add_common(export, json_help="print the JSON written beside the model, with both paths")
    export.set_defaults(func=_export)
