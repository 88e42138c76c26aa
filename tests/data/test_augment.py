"""Batched augmentation: shift amounts on an impulse, noise crops and scales, SpecAugment band widths, seeds."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from torch import nn

from kwsbench.data.augment import (
    Augmentation,
    NoiseMixer,
    SpecAugment,
    TimeShift,
    mask_bands,
    shift_waveform,
    specaugment_for_tau,
)
from kwsbench.data.features import LogMel
from kwsbench.errors import ConfigError, DataError
from kwsbench.settings import shared_data_dir


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """Eight real 1 s clips of the v0.02 test set: ``(8, 16000)``."""
    paths = sorted((shared_data_dir() / "speech_commands_test_set_v0.02" / "yes").glob("*.wav"))[:8]
    return torch.stack([torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths])


@pytest.fixture(scope="module")
def background() -> list[torch.Tensor]:
    """The first 3 s of each real ``_background_noise_`` file of the v0.01 sample (six files)."""
    folder = shared_data_dir() / "speech_commands_v0.01_sample" / "_background_noise_"
    return [
        torch.from_numpy(sf.read(p, dtype="float32", frames=48000)[0]) for p in sorted(folder.glob("*.wav"))
    ]


def test_shift_moves_an_impulse_by_the_drawn_amount():
    impulse = torch.zeros(64, 16000)
    impulse[:, 8000] = 1.0
    shifts = TimeShift(1600).draw(64, seeded(3))
    shifted = TimeShift(1600)(impulse, seeded(3))
    assert shifted.shape == impulse.shape
    assert torch.equal(shifted.argmax(dim=1), 8000 - shifts)
    assert shifts.abs().max() <= 1600 and len(shifts.unique()) > 32


def test_shift_fills_with_zeros_and_keeps_unselected_clips():
    ones = torch.ones(32, 16000)
    selected = torch.arange(32) % 2 == 0
    shifts = TimeShift().draw(32, seeded(1))
    shifted = TimeShift()(ones, seeded(1), selected)
    assert torch.equal((shifted == 0).sum(dim=1), shifts.abs() * selected)
    assert torch.equal(shifted[~selected], ones[~selected])


def test_shift_matches_slicing_per_clip_even_past_the_clip_length(speech):
    """out[b] = x[b, s:] + zeros (s > 0) or zeros + x[b, :L + s] (s < 0), the official code's slicing."""
    length = speech.shape[1]
    shifts = torch.tensor([0, 1, -1, 1600, -1600, length - 1, -(length - 1), length + 5])
    out = shift_waveform(speech, shifts)
    for clip, s, row in zip(speech, shifts.tolist(), out, strict=True):
        expected = torch.zeros(length)
        if 0 <= s < length:
            expected[: length - s] = clip[s:]
        elif -length < s < 0:
            expected[-s:] = clip[: length + s]
        assert torch.equal(row, expected), s


def test_shift_is_reproducible_from_the_seed(speech):
    assert torch.equal(TimeShift()(speech, seeded(7)), TimeShift()(speech, seeded(7)))
    assert not torch.equal(TimeShift()(speech, seeded(7)), TimeShift()(speech, seeded(8)))


def test_noise_crops_are_contiguous_slices_of_one_file():
    # File i holds i * 1e5 + t, so a crop names its file and start and must count up by one.
    files = [
        i * 1e5 + torch.arange(length, dtype=torch.float32) for i, length in enumerate((20000, 30000, 16000))
    ]
    crops = NoiseMixer(files).crops(200, 16000, seeded(0))
    file, start = (crops[:, 0] // 1e5).long(), crops[:, 0] % 1e5
    assert torch.equal(crops - crops[:, :1], torch.arange(16000.0).expand(200, -1))
    assert set(file.tolist()) == {0, 1, 2}
    assert torch.all(start + 16000 <= torch.tensor([20000, 30000, 16000])[file])


def test_noise_is_added_with_probability_and_bounded_scale():
    mixer = NoiseMixer(torch.full((2, 20000), 0.5), probability=0.8, max_scale=0.1)
    added = mixer(torch.zeros(1000, 16000), generator=seeded(0))
    per_clip = added[:, 0]
    assert torch.equal(added, per_clip.unsqueeze(1).expand(-1, 16000))  # one scale per clip
    assert 700 < (per_clip > 0).sum() < 900
    assert per_clip.max() <= 0.05 and per_clip.max() > 0.045


def test_silence_gets_noise_even_at_probability_zero():
    silence = torch.arange(10) < 4
    mixer = NoiseMixer(torch.full((1, 16000), 0.5), probability=0.0, silence_scale=(1.0, 1.0))
    added = mixer(torch.zeros(10, 16000), silence, seeded(0))
    assert torch.all(added[:4] == 0.5) and torch.all(added[4:] == 0)


def test_mixing_clamps_to_full_scale():
    mixer = NoiseMixer(torch.full((1, 16000), 0.5), probability=1.0, silence_scale=(1.0, 1.0))
    assert torch.all(mixer(torch.full((3, 16000), 0.9), torch.ones(3, dtype=torch.bool)) == 1.0)


def test_real_noise_changes_speech_reproducibly_and_not_at_probability_zero(speech, background):
    noisy = NoiseMixer(background, probability=1.0)(speech, generator=seeded(5))
    assert (noisy - speech).abs().amax(dim=1).min() > 0
    assert torch.equal(noisy, NoiseMixer(background, probability=1.0)(speech, generator=seeded(5)))
    assert torch.equal(NoiseMixer(background, probability=0.0)(speech, generator=seeded(5)), speech)


def test_noise_shorter_than_a_clip_is_a_data_error():
    with pytest.raises(DataError, match="shortest file has 8000 samples"):
        NoiseMixer([torch.zeros(8000)])(torch.zeros(2, 16000), generator=seeded(0))


@pytest.mark.parametrize("param", [1, 3, 7, 20])
def test_mask_bands_are_one_band_narrower_than_the_parameter(param):
    bands = mask_bands(101, param, 4000, seeded(param), "cpu")
    widths = bands.sum(dim=1)
    starts = bands.float().argmax(dim=1)
    assert widths.max() == param - 1 and widths.min() == 0
    # one contiguous band per row
    assert torch.all(bands[widths > 0].int().diff(dim=1).abs().sum(dim=1) <= 2)
    assert torch.all(starts[widths > 0] + widths[widths > 0] <= 101)


def test_spec_augment_masks_per_example_with_the_fill_value():
    features = torch.randn(300, 1, 40, 101) + 5.0
    augment = SpecAugment(freq_mask_param=7, time_mask_param=20, mask_value=0.0)
    masked = augment(features, seeded(0))
    assert masked.shape == features.shape
    changed = masked != features
    assert torch.all(masked[changed] == 0.0)
    freq_rows = changed.all(dim=3).squeeze(1).sum(dim=1)  # frequency bins masked at every frame
    time_cols = changed.all(dim=2).squeeze(1).sum(dim=1)
    assert freq_rows.max() <= 2 * 6 and time_cols.max() <= 2 * 19
    assert len({tuple(row.tolist()) for row in changed.all(dim=3).squeeze(1)}) > 100  # per-example masks


def test_zero_frequency_parameter_disables_frequency_masks():
    features = torch.ones(50, 1, 40, 101)
    masked = SpecAugment(freq_mask_param=0, time_mask_param=20)(features, seeded(0))
    assert not (masked == 0).all(dim=3).any()
    assert (masked == 0).all(dim=2).any()


@pytest.mark.parametrize(("tau", "freq_param"), [(1, 0), (1.5, 1), (2, 3), (3, 5), (6, 7), (8, 7)])
def test_specaugment_for_tau_follows_the_recipe(tau, freq_param):
    augment = specaugment_for_tau(tau)
    assert augment.freq_mask_param == freq_param
    assert augment.time_mask_param == (0 if tau == 1 else 20)
    assert augment.enabled == (tau != 1)


def test_specaugment_for_an_unlisted_width_is_a_config_error():
    with pytest.raises(ConfigError, match="tau"):
        specaugment_for_tau(2.5)


def test_augmentation_composes_and_shifts_only_noised_clips(speech, background):
    plain = LogMel()(speech)
    off = Augmentation(LogMel(), time_shift=TimeShift(), noise=NoiseMixer(background, probability=0.0))
    assert torch.equal(off(speech, generator=seeded(0)), plain)
    full = Augmentation(
        LogMel(), time_shift=TimeShift(), noise=NoiseMixer(background), spec_augment=specaugment_for_tau(3)
    )
    augmented = full(speech, generator=seeded(0))
    assert augmented.shape == (8, 1, 40, 101)
    assert torch.equal(augmented, full(speech, generator=seeded(0)))
    assert not torch.equal(augmented, plain)


def _impulses(batch: int) -> torch.Tensor:
    impulse = torch.zeros(batch, 16000)
    impulse[:, 8000] = 1.0
    return impulse


def test_composed_pipeline_shifts_each_noised_clip_by_a_uniform_amount():
    # Silent noise and no frontend: the output is the shifted waveform, so each clip's impulse shows its shift.
    silent = NoiseMixer(torch.zeros(1, 16000), probability=1.0)
    pipeline = Augmentation(nn.Identity(), time_shift=TimeShift(1600), noise=silent)
    out = pipeline(_impulses(256), generator=seeded(3))
    assert torch.all(out.amax(dim=1) == 1.0)  # |shift| <= 1600 keeps the impulse inside the clip
    shifts = (8000 - out.argmax(dim=1)).double()
    assert shifts.abs().max() <= 1600 and len(shifts.unique()) > 200
    # A uniform integer on [-1600, 1600]: mean 0, std 924.2; over 256 clips the sample mean's standard
    # error is 924.2 / 16 = 58 and the std's about 924.2 * sqrt(0.8 / (4 * 256)) = 26 (kurtosis 1.8).
    # Five standard errors either way.
    assert shifts.mean().abs() < 5 * 58
    assert abs(shifts.std().item() - 924.2) < 5 * 26


def test_composed_pipeline_shifts_only_picked_clips_unless_told_otherwise():
    silent = NoiseMixer(torch.zeros(1, 16000), probability=0.5)
    picked_only = Augmentation(nn.Identity(), time_shift=TimeShift(1600), noise=silent)
    unshifted = (picked_only(_impulses(256), generator=seeded(4)).argmax(dim=1) == 8000).sum().item()
    # Binomial(256, 0.5) clips not picked (mean 128, sd 8), plus 1 in 3201 drawn shifts of 0: 5 sd.
    assert abs(unshifted - 128) < 5 * 8
    every_clip = Augmentation(nn.Identity(), time_shift=TimeShift(1600), noise=silent, shift_with_noise=False)
    assert (every_clip(_impulses(256), generator=seeded(4)).argmax(dim=1) == 8000).sum() < 5


def test_composed_shift_changes_the_features_of_real_speech(speech, background):
    # Same generator, same draws for noise and masks: only the shift amount differs from the zero-shift twin.
    def pipeline(max_shift: int) -> Augmentation:
        return Augmentation(
            LogMel(), time_shift=TimeShift(max_shift), noise=NoiseMixer(background, probability=1.0)
        )

    shifted, zero = pipeline(1600)(speech, generator=seeded(0)), pipeline(0)(speech, generator=seeded(0))
    assert torch.equal(pipeline(0)(speech, generator=seeded(0)), zero)
    assert (shifted - zero).abs().amax(dim=(1, 2, 3)).min() > 1.0  # every clip moved, by whole frames
