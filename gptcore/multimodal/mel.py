"""Log-mel spectrogram features in plain torch: torch.stft and a triangular mel filterbank
(HTK mel scale, filters normalised to peak 1), as Whisper-style audio encoders consume."""
import torch


def hz_to_mel(hz):
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels, n_fft, sample_rate, f_min=0.0, f_max=None):
    """(n_mels, n_fft // 2 + 1) triangular filters: filter m rises linearly from mel point m to
    m + 1 and falls to m + 2, where the n_mels + 2 points are evenly spaced in mel between
    f_min and f_max (default Nyquist). Computed in float64, returned float32."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"n_mels, n_fft: expected n_mels >= 1 and n_fft >= 2, got {n_mels}, {n_fft}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"f_min, f_max: expected 0 <= f_min < f_max <= sample_rate / 2 = "
                         f"{sample_rate / 2}, got {f_min}, {f_max}")
    bin_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    points = mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2,
                                      dtype=torch.float64))                              # (M+2,)
    left, centre, right = points[:-2, None], points[1:-1, None], points[2:, None]         # (M, 1)
    rising = (bin_hz - left) / (centre - left)
    falling = (right - bin_hz) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()                  # (M, F)


def log_mel(wave, filterbank, n_fft, hop, eps=1e-6):
    """wave (..., samples) -> (..., frames, n_mels) natural-log mel energies, frames =
    samples // hop + 1 (centred Hann-window STFT, reflect padding)."""
    if wave.shape[-1] <= n_fft // 2:
        raise ValueError(f"wave: expected more than n_fft // 2 = {n_fft // 2} samples, "
                         f"got {wave.shape[-1]}")
    window = torch.hann_window(n_fft, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(wave.reshape(-1, wave.shape[-1]), n_fft, hop_length=hop, window=window,
                      center=True, return_complex=True)                  # (B, F, frames)
    power = spec.abs().pow(2).transpose(1, 2)                            # (B, frames, F)
    mel = power @ filterbank.to(power.dtype).T                           # (B, frames, M)
    return torch.log(mel + eps).reshape(*wave.shape[:-1], *mel.shape[1:])
