"""Frontend latency at one thread: torchaudio MelSpectrogram + log vs kwsbench LogMel, and LogMel in ONNX Runtime.

Run: ``pytest benchmarks/bench_frontend.py --benchmark-only``. Each group (batch 1, batch 100) prints the
two eager implementations side by side; pytest-benchmark's parenthesised column is the ratio to the fastest
in that group. The ONNX group times the exported frontend alone and frontend + bcresnet_1 (batch 1).
Inputs are real 1 s clips of the official v0.02 test set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import onnxruntime as ort
import pytest
import soundfile as sf
import torch
import torchaudio

from kwsbench.data.features import LogMel
from kwsbench.models import create_model
from kwsbench.settings import shared_data_dir


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    """100 real 1 s clips ``(100, 16000)``, every 39th file of the test set."""
    paths = sorted((shared_data_dir() / "speech_commands_test_set_v0.02").glob("*/*.wav"))[::39][:100]
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths]
    return torch.stack([torch.nn.functional.pad(w, (0, 16000 - w.shape[0])) for w in waves])


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.inference_mode():
        yield
    torch.set_num_threads(threads)


def torchaudio_frontend() -> Callable[[torch.Tensor], torch.Tensor]:
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=512, win_length=480, hop_length=160, n_mels=40
    )
    return lambda waveform: torch.log(mel(waveform) + 1e-6).unsqueeze(1)


FRONTENDS = {"torchaudio": torchaudio_frontend, "kwsbench": LogMel}


@pytest.mark.parametrize("batch", [1, 100])
@pytest.mark.parametrize("implementation", list(FRONTENDS))
def test_log_mel_eager(benchmark, clips, implementation, batch):
    benchmark.group = f"log-mel eager, 1 thread, batch {batch}"
    frontend = FRONTENDS[implementation]()
    waveform = clips[:batch].contiguous()
    reference = torchaudio_frontend()(waveform)
    features = benchmark(frontend, waveform)
    benchmark.extra_info["max_abs_diff_vs_torchaudio"] = float((features - reference).abs().max())


@pytest.mark.parametrize("with_model", [False, True], ids=["logmel", "logmel+bcresnet_1"])
def test_onnxruntime(benchmark, clips, tmp_path, with_model):
    benchmark.group = "ONNX Runtime CPU, 1 thread, batch 1"
    module = torch.nn.Sequential(LogMel(), create_model("bcresnet_1")) if with_model else LogMel()
    path = tmp_path / "frontend.onnx"
    torch.onnx.export(module.eval(), (clips[:1],), path, dynamo=False, input_names=["waveform"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"waveform": clips[:1].numpy()}
    benchmark(session.run, None, feed)
