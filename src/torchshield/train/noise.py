"""Where DP noise comes from: a cryptographically secure stream by default, a seeded one only in tests.

Threat model. An adversary who can predict the noise can subtract it from a released model and
read the clipped gradient sums, which carry the training examples. A generator whose state
follows from a seed or from past outputs (torch's Philox/Mersenne Twister, numpy's PCG64, even
when seeded once from ``secrets``) is predictable in that sense; the DP theorem assumes noise the
adversary cannot predict. So every noise draw (and every Poisson sampling coin, whose secrecy
privacy amplification assumes) comes from :class:`SecureNoise`: the keystream of ChaCha20 (from
``cryptography``, i.e. OpenSSL) under a 256-bit key from ``os.urandom``, re-keyed every 64 MiB.
ChaCha20's keystream is the generator behind Linux's ``getrandom`` and OpenSSL's own DRBG
options; we do not write a primitive, we use one as a stream of uniform bits.

Floating-point attacks. A Gaussian sampler built on float arithmetic does not produce every
float with the probability the maths assumes; Jin et al. (arXiv:2112.05307) and Holohan and
Braghin (arXiv:2107.10138) show how the gaps can reveal the unnoised value. ``secure_mode``
applies Holohan and Braghin's fix that Opacus' ``secure_mode`` uses (Section 5.1, n = 2): the
noise is the sum of 4 independent draws of std ``sigma``, divided by 2, computed in float64.
It costs 4x the samples (measured in ``benchmarks/bench_dp_noise.py``).

:class:`SeededNoise` exists only for tests (``privacy.insecure_seed_for_tests: true``): its
output follows from the seed, so a bundle trained with it says so in its privacy record.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ["NoiseSource", "SecureNoise", "SeededNoise", "discrete_laplace", "noise_source"]

_REKEY_BYTES = 64 << 20  # far below ChaCha20's 256 GiB per (key, nonce); re-keying is cheap
_CHUNK = 1 << 20  # samples per Box-Muller pass: bounds the temporary buffers at ~24 MiB
_ZEROS = bytes(8 * _CHUNK)  # the plaintext whose encryption is the keystream; allocated once
_TWO_PI = 2.0 * math.pi


class NoiseSource(Protocol):
    """What DP-SGD and client-level DP draw from."""

    secure_mode: bool

    def uniform(self, n: int) -> np.ndarray: ...  # float64 in (0, 1]

    def normal(self, shape: Any, std: float, *, dtype: torch.dtype = torch.float32,
               device: Any = None) -> Tensor: ...
    def add_normal_(self, out: Tensor, std: float) -> Tensor: ...  # out += N(0, std^2), in place

    def describe(self) -> dict[str, Any]: ...


class _GaussianFromUniform:
    """Box-Muller over a uniform stream; ``secure_mode`` sums 4 draws (see the module docstring)."""

    secure_mode: bool = False

    def uniform(self, n: int) -> np.ndarray:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def _standard_normal(self, n: int) -> np.ndarray:
        """``n`` float64 standard normals, ``_CHUNK`` at a time (:meth:`_box_muller`)."""
        out = np.empty(n)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            out[start:start + m] = self._box_muller(m, torch.float64).numpy()
        return out

    def normal_array(self, n: int, std: float) -> np.ndarray:
        """``n`` float64 draws of N(0, std^2)."""
        if self.secure_mode:
            z = self._standard_normal(4 * n).reshape(4, n).sum(0) / 2.0
        else:
            z = self._standard_normal(n)
        return z * std

    def add_normal_(self, out: Tensor, std: float) -> Tensor:
        """``out += N(0, std^2)`` elementwise, in place, drawn ``_CHUNK`` values at a time: no
        full-size float64 temporaries (a DP step over 11.2M parameters made six of 90 MB each,
        paying their page faults and memory traffic on every step).

        For a float32 ``out`` outside ``secure_mode`` (the DP-SGD step) the radius
        ``sqrt(-2 ln u)`` is computed in float64 from the 53-bit uniform, so the tails reach
        8.6 sigma as in float64, and the angle and the product in float32, the precision the
        noise is added at: 1.7x faster (11.2M samples: 90 vs 155 ms, one thread), values within
        float32 rounding of the float64 transform (tested). ``secure_mode`` and float64 targets
        keep the whole transform in float64."""
        if not out.is_contiguous():
            return out.add_(self.normal(out.shape, std, dtype=out.dtype, device=out.device))
        flat = out.view(-1)
        fast = out.dtype == torch.float32 and not self.secure_mode
        for start in range(0, flat.numel(), _CHUNK):
            part = flat[start:start + _CHUNK]
            if fast:
                z = self._box_muller(part.numel(), torch.float32).mul_(std)
            else:
                z = torch.from_numpy(self.normal_array(part.numel(), std))
            part.add_(z if part.device.type == "cpu" else z.to(part.device))
        return out

    def _box_muller(self, n: int, dtype: torch.dtype) -> Tensor:
        """``n`` <= ``_CHUNK`` standard normals: Box-Muller with torch's vectorised log/sqrt/cos/sin
        (SLEEF, 1 ulp; 1.8-2.8x faster than numpy's scalar float64 loops here), the radius in
        float64 from the 53-bit uniforms, the angle and the product in ``dtype``. The pairs use
        ``n`` uniforms rounded up to even, whatever ``dtype``."""
        pairs = (n + 1) // 2
        u = torch.from_numpy(self.uniform(2 * pairs))
        r = torch.log(u[:pairs]).mul_(-2.0).sqrt_().to(dtype)
        theta = u[pairs:].to(dtype).mul_(_TWO_PI)
        z = torch.empty(2 * pairs, dtype=dtype)
        torch.cos(theta, out=z[:pairs]).mul_(r)
        torch.sin(theta, out=z[pairs:]).mul_(r)
        return z[:n]

    def normal(self, shape: Any, std: float, *, dtype: torch.dtype = torch.float32, device: Any = None) -> Tensor:
        """A fresh tensor of N(0, std^2) draws: :meth:`add_normal_` on zeros (drawn on the CPU)."""
        out = self.add_normal_(torch.zeros(torch.Size(shape), dtype=dtype), std)
        return out if device is None else out.to(device)


class SecureNoise(_GaussianFromUniform):
    """Uniform bits from the ChaCha20 keystream, keyed from ``os.urandom`` (a CSPRNG)."""

    def __init__(self, *, secure_mode: bool = False) -> None:
        self.secure_mode = secure_mode
        self._rekey()

    def _rekey(self) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        self._stream = Cipher(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), mode=None).encryptor()
        self._left = _REKEY_BYTES

    def _bytes(self, n: int) -> bytes:
        chunks = []
        zeros = memoryview(_ZEROS)
        while n > 0:
            if self._left == 0:
                self._rekey()
            take = min(n, self._left, len(_ZEROS))
            chunks.append(self._stream.update(zeros[:take]))  # keystream XOR zeros = keystream
            self._left -= take
            n -= take
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def uniform(self, n: int) -> np.ndarray:
        bits = np.frombuffer(self._bytes(8 * n), dtype=np.uint64) >> np.uint64(11)
        u = bits.astype(np.float64)
        u += 1.0
        u *= 2.0**-53
        return u  # (0, 1]: log() is finite

    def describe(self) -> dict[str, Any]:
        return {"generator": "ChaCha20 keystream (cryptography), key from os.urandom", "secure_mode": self.secure_mode}


class SeededNoise(_GaussianFromUniform):
    """INSECURE: a seeded PCG64 stream, so that tests can repeat a run. Never for a release."""

    def __init__(self, seed: int, *, secure_mode: bool = False) -> None:
        self.secure_mode = secure_mode
        self._rng = np.random.default_rng(seed)

    def uniform(self, n: int) -> np.ndarray:
        return 1.0 - self._rng.random(n)  # (0, 1]

    def describe(self) -> dict[str, Any]:
        return {"generator": "INSECURE seeded PCG64 (insecure_seed_for_tests)", "secure_mode": self.secure_mode}


def noise_source(seed: int | None = None, *, secure_mode: bool = False) -> NoiseSource:
    """The secure stream, or (tests only, ``seed`` given) a seeded one."""
    return SecureNoise(secure_mode=secure_mode) if seed is None else SeededNoise(seed, secure_mode=secure_mode)


def discrete_laplace(value: int, epsilon: float, source: NoiseSource) -> int:
    """``value`` plus two-sided geometric noise: epsilon-DP for a count of sensitivity 1.

    Integer output: the floating-point attacks on continuous Laplace (Mironov 2012) do not apply
    to a value rounded onto the integers by construction. ``P(k) ~ exp(-epsilon |k|)``."""
    if not epsilon > 0:
        raise ValueError("epsilon must be > 0")
    u = source.uniform(2)
    log_q = -epsilon  # log of the geometric's failure probability exp(-epsilon)
    g1, g2 = (math.floor(math.log(float(v)) / log_q) for v in u)
    return int(value) + g1 - g2
