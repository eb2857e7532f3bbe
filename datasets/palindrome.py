"""Random palindromes, generated vectorised on the device: a pure function of (n, seq_len, generator).

A sample is a palindrome of N = T+1 digits; the input is its first T digits (one scalar per
step) and the target its last digit, which equals the first: the task is to remember x_0 for
T steps.
"""

from __future__ import annotations

import torch


def palindromes(n: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return x (n, seq_len) float digits and y (n,) long targets, on the generator's device."""
    N = seq_len + 1
    half = torch.randint(0, 10, (n, (N + 1) // 2), generator=generator, device=generator.device)
    full = torch.cat([half, half[:, : N // 2].flip(1)], dim=1)  # (n, N), full[:, i] == full[:, N-1-i]
    return full[:, :seq_len].float(), full[:, seq_len]


STRIDE = 1_000_003  # seeds of one seed's streams: STRIDE * seed + stream


def generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one seed's stream (palindromes: 0 train, 1 validation, 2 test; arithmetic: see
    datasets.arithmetic): fixed held-out sets, the same in every trial."""
    g = torch.Generator(device=device)
    g.manual_seed(STRIDE * seed + stream)
    return g
