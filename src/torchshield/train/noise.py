"""Where DP noise comes from: a cryptographically secure stream by default, a seeded one only in tests.

Threat model. An adversary who can predict the noise can subtract it from a released model and
read the clipped gradient sums, which carry the training examples. A generator whose state
follows from a seed or from past outputs (torch's Philox/Mersenne Twister, numpy's PCG64, even
when seeded once from ``secrets``) is predictable in that sense; the DP theorem assumes noise the
adversary cannot predict. So every noise draw (and every Poisson sampling coin, whose secrecy
privacy amplification assumes) comes from :class:`SecureNoise`: the keystream of AES-256 in
counter mode (from ``cryptography``, i.e. OpenSSL) under a key from ``os.urandom``, re-keyed every
64 MiB. AES-CTR is the core of NIST's CTR_DRBG (SP 800-90A); we do not write a primitive, we use
one as a stream of uniform bits. AES rather than ChaCha20 (which we used before): with the CPU's
AES instructions OpenSSL's AES-CTR is the faster of the two, 9.6 vs 14 ms for the 67 MB of one
DP step over 11.2M parameters here (without them OpenSSL falls back to a constant-time
implementation, slower, still correct).

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

_REKEY_BYTES = 64 << 20  # 4M counter blocks per key, far below AES-CTR's limits; re-keying is cheap
_CHUNK = 1 << 20  # samples per Box-Muller pass: bounds the temporary buffers at ~24 MiB
_ZEROS = bytes(8 * _CHUNK)  # the plaintext whose encryption is the keystream; allocated once
_TWO_PI = 2.0 * math.pi
# IEEE-754 bit patterns: a float in [1, 2) is the exponent of 1.0 with any mantissa
_MANTISSA32, _ONE32 = (1 << 23) - 1, 0x3F800000
_LOW63 = (1 << 63) - 1  # an int64 word's non-negative part
_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1


class NoiseSource(Protocol):
    """What DP-SGD and client-level DP draw from."""

    secure_mode: bool

    def uniform(self, n: int) -> np.ndarray: ...  # float64 in (0, 1]

    def normal(self, shape: Any, std: float, *, dtype: torch.dtype = torch.float32,
               device: Any = None) -> Tensor: ...
    def add_normal_(self, out: Tensor, std: float) -> Tensor: ...  # out += N(0, std^2), in place

    def describe(self) -> dict[str, Any]: ...


class _GaussianFromUniform:
    """Box-Muller over a stream of random bytes; ``secure_mode`` sums 4 draws (see the module docstring).

    Subclasses provide :meth:`_fill`, which writes random bytes into a buffer in place. Every draw
    goes through it into preallocated arrays: asking the cipher for fresh ``bytes`` objects cost
    4x the keystream itself here (68 vs 17 ms for 92 MB, one thread), all of it allocation."""

    secure_mode: bool = False
    _buffers: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # :meth:`_scratch`, made on first use

    def _fill(self, buf: memoryview) -> None:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def _words(self, n: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
        """``n`` random unsigned integers of ``dtype`` (uint64 or uint32)."""
        words = np.empty(n, dtype=dtype)
        if n:
            self._fill(memoryview(words).cast("B"))
        return words

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in (0, 1]: the top 53 bits of each 64-bit word, plus one, times 2^-53."""
        words = self._words(n, np.uint64)
        words >>= np.uint64(11)
        u = words.astype(np.float64)
        u += 1.0
        u *= 2.0**-53
        return u  # (0, 1]: log() is finite

    def _standard_normal(self, n: int) -> np.ndarray:
        """``n`` float64 standard normals, ``_CHUNK`` at a time (:meth:`_box_muller64`)."""
        out = np.empty(n)
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            out[start:start + m] = self._box_muller64(m).numpy()
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
        full-size temporaries (a DP step over 11.2M parameters made six of 90 MB each, paying
        their page faults and memory traffic on every step).

        A float32 ``out`` outside ``secure_mode`` (the DP-SGD step) takes :meth:`_add_box_muller32`
        (on a GPU too: only the random bits are copied there); ``secure_mode`` and float64 targets
        keep the whole transform in float64, on the CPU."""
        if not out.is_contiguous():
            return out.add_(self.normal(out.shape, std, dtype=out.dtype, device=out.device))
        flat = out.view(-1)
        fast = out.dtype == torch.float32 and not self.secure_mode
        for start in range(0, flat.numel(), _CHUNK):
            part = flat[start:start + _CHUNK]
            if fast:
                self._add_box_muller32(part, std)
            else:
                z = torch.from_numpy(self.normal_array(part.numel(), std))
                part.add_(z if part.device.type == "cpu" else z.to(part.device))
        return out

    def _box_muller64(self, n: int) -> Tensor:
        """``n`` <= ``_CHUNK`` float64 standard normals: Box-Muller with torch's vectorised
        log/sqrt/cos/sin (SLEEF, 1 ulp; 1.8-2.8x faster than numpy's scalar float64 loops here)
        on 53-bit uniforms. The pairs use ``n`` uniforms rounded up to even."""
        pairs = (n + 1) // 2
        u = torch.from_numpy(self.uniform(2 * pairs))
        r = torch.log(u[:pairs]).mul_(-2.0).sqrt_()
        theta = u[pairs:].mul_(_TWO_PI)
        z = torch.empty(2 * pairs, dtype=torch.float64)
        torch.cos(theta, out=z[:pairs]).mul_(r)
        torch.sin(theta, out=z[pairs:]).mul_(r)
        return z[:n]

    def _add_box_muller32(self, part: Tensor, std: float) -> None:
        """``part += N(0, std^2)`` for a float32 chunk (``numel <= _CHUNK``), the DP step's path.

        The radius ``std * sqrt(-2 ln u)`` takes a uniform ``u`` made of 63 random bits: the
        integer ``k`` (forced odd, so never 0) converted to float32, times 2^-63. The conversion
        rounds to 24 significant bits *at every scale*, so ``u`` keeps float32's relative
        precision down to 2^-63 and the tails reach 9.3 sigma (``ln`` in float32; a 52-bit float64
        uniform reached 8.5 sigma and its float64 ``ln`` cost twice as much). Rounding to nearest
        gives each float the probability of the interval that rounds to it, which is what a
        uniform rounded to float32 is. Near 1 float32 is coarse: ``u`` is capped at 1 - 2^-24, so
        a pair's radius is never 0 (zero noise would release the clipped sum exactly); radii
        below the smallest one, 3.5e-4 ``std`` (probability 6e-8 per pair), are lumped onto it.
        The angle is a 23-bit uniform, as many bits as a float32 angle holds, written into the
        mantissa of a float in [1, 2); its grid is offset by half a step, so ``cos`` and ``sin``
        are never exactly 0 (with 0 on the grid, one value in 2^23 pairs got no noise). The
        products are added with ``addcmul_`` (no buffer for the noise itself): 12 random bytes per
        pair. Values agree with a float64 transform of the same uniforms to float32 rounding
        (tested against numpy).

        Only the random bits come from the CPU (the stream lives there); every step after them
        runs where ``part`` lives, so a GPU step copies 6 bytes per parameter and does the maths
        itself instead of waiting for the CPU's transcendental functions."""
        n = part.numel()
        pairs = (n + 1) // 2
        device = part.device
        bits64, bits32, r, trig = self._scratch(pairs)
        self._fill(memoryview(bits64.numpy()).cast("B"))
        self._fill(memoryview(bits32.numpy()).cast("B"))
        if device.type != "cpu":
            bits64, bits32 = bits64.to(device), bits32.to(device)
            r, trig = torch.empty(pairs, device=device), torch.empty(pairs, device=device)
        r.copy_(bits64.bitwise_and_(_LOW63).bitwise_or_(1))  # k in [1, 2^63), rounded to float32
        r.mul_(2.0**-63).clamp_(max=_BELOW_ONE)  # u = k 2^-63 (exact scaling), never 1: no zero radius
        r.log_().mul_(-2.0 * std * std).sqrt_()
        theta = bits32.bitwise_and_(_MANTISSA32).bitwise_or_(_ONE32).view(torch.float32)  # [1, 2)
        # the grid's midpoints, 2 pi ((j + 1/2) 2^-23 - 1/2): symmetric, and never 0, +-pi/2 or pi,
        # whose exact zero sin or cos would leave a value with no noise at all (both steps exact)
        theta.sub_(1.5).add_(2.0**-24).mul_(_TWO_PI)
        half = n - pairs  # the second half is one shorter when n is odd
        part[:pairs].addcmul_(torch.cos(theta, out=trig), r)
        if half:
            part[pairs:].addcmul_(torch.sin(theta, out=trig)[:half], r[:half])

    def _scratch(self, pairs: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """CPU buffers for one chunk (int64 and int32 words, two float32 rows), allocated once:
        torch's CPU tensors are not cached, and fresh ones cost their page faults on every chunk
        (11.2M draws, one thread: 75-95 ms with fresh buffers, 55 ms reused)."""
        if self._buffers is None:
            size = (_CHUNK + 1) // 2
            self._buffers = (torch.empty(size, dtype=torch.int64), torch.empty(size, dtype=torch.int32),
                             torch.empty(size), torch.empty(size))
        bits64, bits32, r, trig = self._buffers
        return bits64[:pairs], bits32[:pairs], r[:pairs], trig[:pairs]

    def normal(self, shape: Any, std: float, *, dtype: torch.dtype = torch.float32, device: Any = None) -> Tensor:
        """A fresh tensor of N(0, std^2) draws: :meth:`add_normal_` on zeros (drawn on the CPU)."""
        out = self.add_normal_(torch.zeros(torch.Size(shape), dtype=dtype), std)
        return out if device is None else out.to(device)


class SecureNoise(_GaussianFromUniform):
    """Random bits from the AES-256-CTR keystream, key and initial counter from ``os.urandom``."""

    def __init__(self, *, secure_mode: bool = False) -> None:
        self.secure_mode = secure_mode
        self._rekey()

    def _rekey(self) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._stream = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
        self._left = _REKEY_BYTES

    def _fill(self, buf: memoryview) -> None:
        zeros = memoryview(_ZEROS)
        done = 0
        while done < len(buf):
            if self._left == 0:
                self._rekey()
            take = min(len(buf) - done, self._left, len(_ZEROS))
            # the keystream XOR zeros is the keystream, written straight into the caller's array
            self._stream.update_into(zeros[:take], buf[done:done + take])
            self._left -= take
            done += take

    def describe(self) -> dict[str, Any]:
        return {"generator": "AES-256-CTR keystream (cryptography), key from os.urandom", "secure_mode": self.secure_mode}


class SeededNoise(_GaussianFromUniform):
    """INSECURE: a seeded PCG64 stream, so that tests can repeat a run. Never for a release."""

    def __init__(self, seed: int, *, secure_mode: bool = False) -> None:
        self.secure_mode = secure_mode
        self._rng = np.random.default_rng(seed)

    def _fill(self, buf: memoryview) -> None:
        buf[:] = self._rng.bytes(len(buf))

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
