"""`kwsbench listen` (keywords heard in a file, URL or capture device, live) and `kwsbench stream-eval`
(the same detector on long audio with a known timeline: FRR at 0.5, 1 and 2 false alarms per hour)."""

from __future__ import annotations

import argparse
import json
import sys

from kwsbench.cli.common import add_common, emit, positive_int, subparser
from kwsbench.cli.data import add_dataset_options, dataset_spec
from kwsbench.errors import ConfigError


def _settings(args: argparse.Namespace):
    """The detector options, checked (at 16 kHz and 1 s windows until a model says otherwise)."""
    from kwsbench.stream.detector import DetectorSettings

    return DetectorSettings(
        hop_ms=args.hop_ms,
        smooth_ms=args.smooth_ms,
        threshold=getattr(args, "threshold", DetectorSettings.threshold),  # stream-eval sweeps it
        refractory_ms=args.refractory_ms,
    )


def _for_model(settings, scorer):
    """``settings`` at the scorer's sample rate and window length."""
    import dataclasses

    return dataclasses.replace(settings, sample_rate=scorer.sample_rate, window_samples=scorer.window_samples)


def _listen(args: argparse.Namespace) -> int:
    from kwsbench.stream.detector import StreamingDetector
    from kwsbench.stream.listen import listen
    from kwsbench.stream.scorer import load_scorer
    from kwsbench.stream.sources import import_av, open_source, resolve_source

    import_av()  # a missing FFmpeg is said before the model is built
    spec = resolve_source(args.source, args.input_format, args.input_device)
    settings = _settings(args)  # bad options fail before the model is built
    scorer = load_scorer(
        args.checkpoint,
        args.model_file,
        backend=args.backend,
        threads=1,
        batch=1,
        streaming=args.streaming,
        hop_ms=args.hop_ms,
    )
    detector = StreamingDetector(scorer, _for_model(settings, scorer))
    keywords = ", ".join(k for k in scorer.labels if not k.startswith("_"))
    print(f"listening to {spec.label} for {keywords} ({scorer.name} on {scorer.note})", file=sys.stderr)

    def show(detection) -> None:
        if args.json:
            print(json.dumps(detection.to_dict()), flush=True)
        else:
            print(f"{detection.time_s:.2f} {detection.keyword} {detection.score:.3f}", flush=True)

    with open_source(spec, scorer.sample_rate) as chunks:
        summary = listen(chunks, detector, show, source=spec.label)
    print(f"kwsbench listen: {summary.describe()}", file=sys.stderr)
    return 0


def _stream_eval(args: argparse.Namespace) -> int:
    from kwsbench.stream.evaluate import (
        evaluate_recording,
        evaluate_synthetic,
        format_stream_eval,
        save_stream_eval,
    )
    from kwsbench.stream.scorer import load_scorer

    synthetic = args.dataset is not None or args.data_dir is not None
    if (args.recording is None) != (args.labels is None):
        raise ConfigError("--recording and --labels go together; pass both")
    if synthetic == (args.recording is not None):
        raise ConfigError(
            "stream-eval needs either --dataset and --data-dir (synthetic streams) or --recording and --labels"
        )
    if synthetic and (args.dataset is None or args.data_dir is None):
        raise ConfigError("--dataset and --data-dir go together; pass both")
    if args.save_stream and not synthetic:
        raise ConfigError("--save-stream applies to synthetic streams; drop it with --recording")
    if args.save_stream and args.out is None:
        raise ConfigError("--save-stream writes into --out; pass --out DIR")
    if args.compare:
        return _compare(args, synthetic)
    settings = _settings(args)
    if not synthetic:  # a bad label file or a missing recording fails before the model is built
        from kwsbench.stream.labels import read_labels
        from kwsbench.stream.sources import resolve_source

        truth = read_labels(args.labels)
        resolve_source(args.recording)
    scorer = load_scorer(
        args.checkpoint,
        args.model_file,
        backend=args.backend,
        threads=args.threads,
        batch=args.batch,
        streaming=args.streaming,
        hop_ms=args.hop_ms,
    )
    settings = _for_model(settings, scorer)
    options = dict(tolerance_s=args.tolerance_ms / 1000, batch=args.batch)
    if synthetic:
        record = evaluate_synthetic(
            scorer, dataset_spec(args), settings, hours=args.hours, snr_db=args.snr_db, seed=args.seed,
            cache_dir=args.cache_dir, save_stream=args.out if args.save_stream else None, **options,
        )  # fmt: skip
    else:
        record = evaluate_recording(
            scorer, args.recording, truth, settings, labels_name=args.labels, **options
        )
    text = format_stream_eval(record)
    if args.out is not None:
        record_path, png = save_stream_eval(record, args.out)
        text += f"\nrecord: {record_path}; " + (
            f"DET curve: {png}" if png else "no DET curve (no false alarm at any threshold)"
        )
    return emit(record, args.json, lambda _: text)


def _compare(args: argparse.Namespace, synthetic: bool) -> int:
    from kwsbench.stream.compare import compare_streaming, format_comparison

    if not synthetic or args.model_file is not None:
        raise ConfigError("--compare streams a --checkpoint (or the bundled model) on a synthetic stream: "
                          "pass --dataset and --data-dir, not --recording or --model-file")  # fmt: skip
    result = compare_streaming(
        args.checkpoint, dataset_spec(args), hours=args.hours, snr_db=args.snr_db, seed=args.seed,
        hop_ms=args.hop_ms, cache_dir=args.cache_dir, threads=args.threads, progress=not args.json,
    )  # fmt: skip
    return emit(result.to_dict(), args.json, lambda _: format_comparison(result))


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from kwsbench.stream.backend_names import STREAM_BACKENDS

    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--checkpoint", help="a checkpoint.pt from `kwsbench train` (default: the bundled BC-ResNet-1)"
    )
    model.add_argument("--model-file", help="a model from `kwsbench export` (the .onnx, its .json beside it)")
    p.add_argument(
        "--backend", choices=STREAM_BACKENDS, default=None,
        help=f"runtime for --checkpoint, log-mel included (default: {STREAM_BACKENDS[0]}, the fastest exact one)",
    )  # fmt: skip
    p.add_argument(
        "--streaming", action="store_true",
        help="score each hop incrementally (kwsbench.stream.incremental), only its new frames computed: a "
        "causal model as it is, a standard one (the bundled BC-ResNet-1) 600 ms late; or a --model-file of "
        "`export --streaming`. The default backend runs the step in native C (OpenVINO without a C compiler)",
    )  # fmt: skip


def _add_detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hop-ms", type=float, default=100.0, help="score the last second every this many ms")
    p.add_argument("--smooth-ms", type=float, default=300.0, help="average the posteriors over this span")
    p.add_argument(
        "--refractory-ms", type=float, default=1000.0, help="after a detection, stay silent this long"
    )


def register(sub) -> None:
    listen = subparser(
        sub, "listen", "print the keywords heard in a file, URL or capture device, as they come"
    )
    _add_model_options(listen)
    listen.add_argument(
        "--source", default="mic",
        help="mic (the default capture device), an audio file or a URL; anything FFmpeg opens",
    )  # fmt: skip
    listen.add_argument(
        "--input-format", help="FFmpeg input format, e.g. alsa, pulse, dshow, avfoundation, lavfi"
    )
    listen.add_argument(
        "--input-device", help="capture device for --source mic, e.g. hw:1 or 'audio=Microphone'"
    )
    _add_detector_options(listen)
    listen.add_argument(
        "--threshold", type=float, default=0.7, help="smoothed posterior a keyword needs to fire"
    )
    add_common(listen, json_help="one JSON object per detection (time_s, keyword, score)")
    listen.set_defaults(func=_listen)

    evaluate = subparser(
        sub, "stream-eval", "FRR at 0.5, 1 and 2 false alarms per hour on long audio, and the DET curve"
    )
    _add_model_options(evaluate)
    add_dataset_options(evaluate, required=False)
    evaluate.add_argument("--hours", type=float, default=1.0, help="length of the synthetic stream")
    evaluate.add_argument("--snr-db", type=float, default=10.0, help="speech over background noise")
    evaluate.add_argument("--seed", type=int, default=0, help="placement, order and noise of the stream")
    evaluate.add_argument(
        "--recording", help="a real recording (anything FFmpeg decodes) instead of a dataset"
    )
    evaluate.add_argument("--labels", help="its label file: one 'start_s end_s keyword' line per word")
    evaluate.add_argument(
        "--tolerance-ms", type=float, default=500.0,
        help="a detection counts until this long after the keyword's end (time = end of the 1 s window)",
    )  # fmt: skip
    _add_detector_options(evaluate)  # no --threshold: the evaluation sweeps it
    evaluate.add_argument("--threads", type=positive_int, default=2, help="intra-op threads for scoring")
    evaluate.add_argument(
        "--batch",
        type=positive_int,
        default=16,
        help="windows scored per call (16 measured fastest on 2 cores)",
    )
    evaluate.add_argument("--cache-dir", default=None, help="clip cache folder (default: $KWSBENCH_CACHE)")
    evaluate.add_argument(
        "--compare", action="store_true",
        help="the checkpoint streamed incrementally against per window on the same synthetic stream: "
        "posterior differences and FRR at 1 FA/h both ways (kwsbench.stream.compare)",
    )  # fmt: skip
    evaluate.add_argument("--out", help="folder for stream_eval.json (the record) and det.png")
    evaluate.add_argument(
        "--save-stream",
        action="store_true",
        help="also write the synthetic stream.wav and stream_labels.txt to --out",
    )
    add_common(evaluate, json_help="print the stream_eval record")
    evaluate.set_defaults(func=_stream_eval)
