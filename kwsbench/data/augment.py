"""Training augmentation, batched on the device: time shift, background noise, SpecAugment.

Follows the official BC-ResNet code (Qualcomm ``utils.Preprocess``; ../shared/docs/PAPER.md §3), with one
random draw per clip vectorised over the batch instead of a Python loop. Every random draw takes an
explicit ``torch.Generator`` (on the waveform's device) so a seed reproduces a batch exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwsbench.errors import ConfigError, DataError

# PAPER.md §3 and the official main.py: frequency-mask parameter by width; tau=1 trains without SpecAugment.
FREQ_MASK_PARAM_BY_TAU: dict[float, int] = {1.0: 0, 1.5: 1, 2.0: 3, 3.0: 5, 6.0: 7, 8.0: 7}
TIME_MASK_PARAM = 20


def _uniform(batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(batch, generator=generator, device=device)


def shift_waveform(waveform: Tensor, shifts: Tensor) -> Tensor:
    """``out[b, t] = waveform[b, t + shifts[b]]``, zero outside the clip: ``(B, L), (B,) -> (B, L)``.

    A positive shift moves the content earlier (the official code's ``x[shift:]`` + zeros), a negative one later.
    """
    batch, length = waveform.shape
    if batch == 0:
        return waveform.clone()
    # Rows of a sliding-window view of the zero-padded batch: one row copy per clip. An index tensor of
    # (B, L) source positions for ``gather`` measured 8x slower (12.8 MB of int64 built per batch).
    reach = min(int(shifts.abs().max()), length)
    padded = F.pad(waveform, (reach, reach))
    rows = torch.arange(batch, device=waveform.device)
    return padded.unfold(1, length, 1)[rows, reach + shifts.clamp(-reach, reach)]


class TimeShift(nn.Module):
    """Shift each clip by its own uniform integer offset in ``[-max_shift, max_shift]`` samples, zero fill.

    ``(B, samples) -> (B, samples)``. The default 1600 samples is the recipe's +-100 ms at 16 kHz. (The
    official code draws ``int(U(-0.1, 0.1) * 16000)``, i.e. truncates toward zero; a uniform integer is
    the same range without the doubled weight on 0.)
    """

    def __init__(self, max_shift: int = 1600):
        super().__init__()
        if max_shift < 0:
            raise ConfigError(f"max_shift={max_shift} must be >= 0 samples")
        self.max_shift = max_shift

    def draw(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> Tensor:
        """Per-clip shifts ``(batch,)`` int64."""
        return torch.randint(
            -self.max_shift,
            self.max_shift + 1,
            (batch,),
            generator=generator,
            device=device or torch.device("cpu"),
        )

    def forward(
        self, waveform: Tensor, generator: torch.Generator | None = None, selected: Tensor | None = None
    ) -> Tensor:
        """``(B, samples) -> (B, samples)``; clips where the bool ``selected`` ``(B,)`` is False are not shifted."""
        shifts = self.draw(waveform.shape[0], generator, waveform.device)
        if selected is not None:
            shifts = shifts * selected
        return shift_waveform(waveform, shifts)


class NoiseMixer(nn.Module):
    """Add a random crop of a random background-noise file to some clips: ``(B, samples) -> (B, samples)``.

    The official recipe: each speech clip is picked with ``probability`` (0.8) and gets a crop scaled by
    ``U(0, max_scale)`` (0.1); every silence clip (``is_silence``) is picked and gets a crop scaled by
    ``U(*silence_scale)``. The official code draws ``U(0, 1)`` for silence (PAPER.md's "full scale" is its
    upper end); pass ``silence_scale=(1.0, 1.0)`` for a constant full-scale mix. Picked clips are clamped
    to ``[-1, 1]`` after mixing, as in the official code; clips not picked are returned unchanged.

    ``noise``: ``(N_files, L)`` or a list of 1-D tensors of any lengths, each at least one clip long.
    """

    def __init__(
        self,
        noise: Tensor | Sequence[Tensor],
        probability: float = 0.8,
        max_scale: float = 0.1,
        silence_scale: tuple[float, float] = (0.0, 1.0),
    ):
        super().__init__()
        files = list(noise.unbind(0)) if isinstance(noise, Tensor) else [torch.as_tensor(n) for n in noise]
        if not files or any(f.dim() != 1 for f in files):
            raise DataError("background noise: need at least one file, each a 1-D waveform (N_files, L)")
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"noise probability={probability} must be in [0, 1]")
        self.probability, self.max_scale, self.silence_scale = probability, max_scale, silence_scale
        lengths = torch.tensor([f.shape[0] for f in files])
        bank = torch.zeros(len(files), int(lengths.max()))
        for i, f in enumerate(files):
            bank[i, : f.shape[0]] = f
        self.register_buffer("bank", bank, persistent=False)  # (N_files, max_len), zero-padded
        self.register_buffer("lengths", lengths, persistent=False)

    def select(
        self,
        batch: int,
        is_silence: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> Tensor:
        """Which clips get noise: bool ``(batch,)``; silence clips always do."""
        picked = _uniform(batch, generator, device or self.bank.device) < self.probability
        return picked if is_silence is None else picked | is_silence

    def crops(self, batch: int, samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``batch`` random ``samples``-long crops of random noise files: ``(batch, samples)``."""
        if int(self.lengths.min()) < samples:
            raise DataError(
                f"background noise: the shortest file has {int(self.lengths.min())} samples, "
                f"clips need {samples}; remove it or use longer noise files"
            )
        device = self.bank.device
        file = torch.randint(0, self.bank.shape[0], (batch,), generator=generator, device=device)
        start = (_uniform(batch, generator, device) * (self.lengths[file] - samples + 1)).long()
        # Rows of a sliding-window view: a copy per crop, no (batch, samples) index tensor (6x faster).
        return self.bank.unfold(1, samples, 1)[file, start]

    def forward(
        self,
        waveform: Tensor,
        is_silence: Tensor | None = None,
        generator: torch.Generator | None = None,
        selected: Tensor | None = None,
    ) -> Tensor:
        """``(B, samples) -> (B, samples)``; ``selected`` (bool ``(B,)``) overrides :meth:`select`."""
        batch, samples = waveform.shape
        if selected is None:
            selected = self.select(batch, is_silence, generator, waveform.device)
        low, high = self.silence_scale
        unit = _uniform(batch, generator, waveform.device)
        scale = unit * self.max_scale
        if is_silence is not None:
            scale = torch.where(is_silence, low + unit * (high - low), scale)
        mixed = (waveform + scale.unsqueeze(1) * self.crops(batch, samples, generator)).clamp_(-1.0, 1.0)
        return torch.where(selected.unsqueeze(1), mixed, waveform)


def mask_bands(size: int, mask_param: int, batch: int, generator: torch.Generator | None, device) -> Tensor:
    """One random band per row: bool ``(batch, size)``, width ``floor(U * mask_param)``, start uniform.

    Same draw as the official ``spec_augment`` and torchaudio's masking: widths are ``0 .. mask_param - 1``
    and the start is uniform over the positions where the band fits.
    """
    width = (_uniform(batch, generator, device) * mask_param).long().clamp_(max=size)
    start = (_uniform(batch, generator, device) * (size - width + 1)).long()
    position = torch.arange(size, device=device)
    return (position >= start.unsqueeze(1)) & (position < (start + width).unsqueeze(1))


class SpecAugment(nn.Module):
    """Frequency and time masks per example, no time warping: ``(B, C, F, T) -> (B, C, F, T)``.

    Each of ``n_freq_masks`` (``n_time_masks``) masks has its own width ``floor(U * param)`` (so at most
    ``param - 1``) and position; masks of one example may overlap. Masked values are set to ``mask_value``,
    0 by default as in the official code, which masks the log-mel (not its mean, not log(eps)). A
    parameter of 0 disables that kind of mask; with both 0 the input is returned as is.
    """

    def __init__(
        self,
        freq_mask_param: int,
        time_mask_param: int = TIME_MASK_PARAM,
        n_freq_masks: int = 2,
        n_time_masks: int = 2,
        mask_value: float = 0.0,
    ):
        super().__init__()
        if min(freq_mask_param, time_mask_param, n_freq_masks, n_time_masks) < 0:
            raise ConfigError("SpecAugment mask parameters and mask counts must be >= 0")
        self.freq_mask_param, self.time_mask_param = freq_mask_param, time_mask_param
        self.n_freq_masks, self.n_time_masks, self.mask_value = n_freq_masks, n_time_masks, mask_value

    @property
    def enabled(self) -> bool:
        return self.freq_mask_param * self.n_freq_masks + self.time_mask_param * self.n_time_masks > 0

    def masks(
        self, batch: int, n_freq: int, n_time: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, Tensor]:
        """Bool masks ``(batch, n_freq)`` and ``(batch, n_time)``: True where a value is masked."""
        freq = torch.zeros(batch, n_freq, dtype=torch.bool, device=device)
        time = torch.zeros(batch, n_time, dtype=torch.bool, device=device)
        for _ in range(self.n_freq_masks if self.freq_mask_param else 0):
            freq |= mask_bands(n_freq, self.freq_mask_param, batch, generator, device)
        for _ in range(self.n_time_masks if self.time_mask_param else 0):
            time |= mask_bands(n_time, self.time_mask_param, batch, generator, device)
        return freq, time

    def forward(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, C, F, T) -> (B, C, F, T)`` with each example's bands set to ``mask_value``."""
        if not self.enabled:
            return features
        batch, _, n_freq, n_time = features.shape
        freq, time = self.masks(batch, n_freq, n_time, generator, features.device)
        masked = freq[:, None, :, None] | time[:, None, None, :]
        return features.masked_fill(masked, self.mask_value)

    def extra_repr(self) -> str:
        return (
            f"freq_mask_param={self.freq_mask_param}, time_mask_param={self.time_mask_param}, "
            f"n_freq_masks={self.n_freq_masks}, n_time_masks={self.n_time_masks}, mask_value={self.mask_value}"
        )


def specaugment_for_tau(tau: float) -> SpecAugment:
    """The recipe's SpecAugment for BC-ResNet-tau: 2 frequency masks (parameter by width) and 2 time masks
    (parameter 20); tau=1 trains without SpecAugment, returned as a disabled (identity) ``SpecAugment``."""
    if float(tau) not in FREQ_MASK_PARAM_BY_TAU:
        known = ", ".join(f"{t:g}" for t in FREQ_MASK_PARAM_BY_TAU)
        raise ConfigError(
            f"the recipe gives SpecAugment only for tau in {known}, not {tau:g}; "
            "build SpecAugment(freq_mask_param=...) explicitly"
        )
    freq_param = FREQ_MASK_PARAM_BY_TAU[float(tau)]
    if freq_param == 0:
        return SpecAugment(0, 0)
    return SpecAugment(freq_param, TIME_MASK_PARAM)


class Augmentation(nn.Module):
    """Waveform augments -> frontend -> SpecAugment, as the official training step composes them.

    ``(B, samples)`` -> ``(B, 1, F, T)``. When both ``time_shift`` and ``noise`` are given and
    ``shift_with_noise`` is True (the official code), only the clips picked for noise are shifted: 80 % of
    speech and all silence. Evaluation without augmentation is ``frontend(waveform)``; the official
    validation pass (noise on silence clips only) is ``NoiseMixer(noise, probability=0)`` with ``is_silence``.
    """

    def __init__(
        self,
        frontend: nn.Module,
        *,
        time_shift: TimeShift | None = None,
        noise: NoiseMixer | None = None,
        spec_augment: SpecAugment | None = None,
        shift_with_noise: bool = True,
    ):
        super().__init__()
        self.frontend, self.time_shift, self.noise, self.spec_augment = (
            frontend,
            time_shift,
            noise,
            spec_augment,
        )
        self.shift_with_noise = shift_with_noise

    def forward(
        self, waveform: Tensor, is_silence: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``(B, samples)`` waveforms and optional bool ``(B,)`` silence flags -> augmented ``(B, 1, F, T)``."""
        selected = None
        if self.noise is not None:
            selected = self.noise.select(waveform.shape[0], is_silence, generator, waveform.device)
        if self.time_shift is not None:
            waveform = self.time_shift(waveform, generator, selected if self.shift_with_noise else None)
        if self.noise is not None:
            waveform = self.noise(waveform, is_silence, generator, selected)
        features = self.frontend(waveform)
        if self.spec_augment is not None:
            features = self.spec_augment(features, generator)
        return features
