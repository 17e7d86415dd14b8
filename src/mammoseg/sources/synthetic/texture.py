"""Power-law (1/f^beta) noise fields: the fibroglandular texture of the synthetic phantoms.

Mammographic backgrounds have a power spectrum that falls off as 1/f^beta with beta ~ 3;
these fields reproduce that, at any image size.
"""

from __future__ import annotations

import numpy as np


def power_law_fields(
    rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent zero-mean, unit-SD float32 fields with power spectrum ~ 1/f^beta.

    Filtered white noise, drawn directly in the Fourier domain: complex white noise times
    |f|^(-beta/2), one inverse FFT; its real and imaginary parts are independent fields
    with that spectrum (so one FFT gives two). A low-frequency knee at 1/(image size)
    keeps the largest scales from swamping the rest, so the texture looks alike at every
    image size.
    """
    h, w = shape
    # The field is stationary, so it can be drawn on a grid whose sizes the FFT handles fast
    # (only factors 2, 3, 5; e.g. 4084 = 4 x 1021 is slow) and cropped.
    fh, fw = _fast_fft_size(h), _fast_fft_size(w)
    fy = np.fft.fftfreq(fh).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(fw).astype(np.float32)[None, :]
    knee = np.float32(1.0 / max(h, w))
    spectrum = np.empty((fh, fw), dtype=np.complex64)
    spectrum.real = rng.standard_normal((fh, fw), dtype=np.float32)
    spectrum.imag = rng.standard_normal((fh, fw), dtype=np.float32)
    amplitude = (fy * fy + fx * fx + knee * knee) ** np.float32(-beta / 4)
    amplitude[0, 0] = 0.0
    spectrum *= amplitude
    del amplitude
    field = np.fft.ifft2(spectrum)[:h, :w]
    del spectrum
    pair = []
    for part in (field.real, field.imag):
        part = part.astype(np.float32)
        part -= part.mean()
        part /= max(float(part.std()), 1e-12)
        pair.append(part)
    return pair[0], pair[1]


def _fast_fft_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """One zero-mean, unit-SD float32 field with power spectrum ~ 1/f^beta (see `power_law_fields`)."""
    return power_law_fields(rng, shape, beta)[0]

