"""Recurrent classifiers: vanilla RNN, LSTM and GRU, from scratch and fused (torch.nn).

The scratch cells keep their parameters under the names and shapes of `torch.nn.RNN/LSTM/GRU`
(`weight_ih_l0` (G*H, I), `weight_hh_l0` (G*H, H), `bias_ih_l0`, `bias_hh_l0`; gate order
LSTM i,f,g,o and GRU r,z,n), so `scratch.load_state_dict(fused.state_dict())` gives the same
function: the test of the from-scratch equations.

    RNN   h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h)
    LSTM  i,f,o = sigmoid(.), g = tanh(.); c_t = f*c_{t-1} + i*g; h_t = o*tanh(c_t)
    GRU   r,z = sigmoid(.); n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h_t = (1-z)*n + z*h_{t-1}
The classifier reads the last hidden state: o = W_ph h_T + b_o. With a vocabulary (`vocab`), the
input is a sequence of tokens (B, T) that an embedding turns into vectors of `embed` numbers first.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CELLS = ("rnn", "lstm", "gru")
IMPLS = ("scratch", "fused")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class ScratchRecurrent(nn.Module):
    """One layer of `cell`, stepped in Python over time, with torch.nn's parameter layout."""

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        self.cell, self.hidden_size = cell, hidden_size
        g = GATES[cell] * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(g))
        self.bias_hh_l0 = nn.Parameter(torch.empty(g))
        bound = 1 / math.sqrt(hidden_size)  # torch.nn's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, I) -> h_T: (B, H)
        B, T, _ = x.shape
        H = self.hidden_size
        xw = x @ self.weight_ih_l0.T + self.bias_ih_l0  # (B, T, G*H): input projections at once
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        for t in range(T):
            hw = h @ self.weight_hh_l0.T + self.bias_hh_l0  # (B, G*H)
            if self.cell == "rnn":
                h = torch.tanh(xw[:, t] + hw)
            elif self.cell == "lstm":
                i, f, g, o = (xw[:, t] + hw).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:  # gru: the reset gate scales only the hidden part of n
                xr, xz, xn = xw[:, t].split(H, dim=1)
                hr, hz, hn = hw.split(H, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
        return h


@torch.no_grad()
def set_keep_bias(rnn: nn.Module, hidden_size: int, value: float, layers: int = 1) -> None:
    """Set the bias of the gate that keeps the state (b_ih + b_hh) to `value` in every layer: the LSTM's
    forget gate (gate order i,f,g,o; Jozefowicz et al. 2015: 1.0) and the GRU's update gate z (order
    r,z,n; h_t = (1-z)*n + z*h_{t-1}), both the second block: the cell keeps its memory from the start
    instead of halving it each step."""
    for k in range(layers):
        getattr(rnn, f"bias_ih_l{k}")[hidden_size : 2 * hidden_size].fill_(value)
        getattr(rnn, f"bias_hh_l{k}")[hidden_size : 2 * hidden_size].zero_()


class RecurrentClassifier(nn.Module):
    """Reads a sequence (B, T) or (B, T, I) and classifies it from the last hidden state."""

    def __init__(
        self,
        cell: str = "lstm",
        impl: str = "fused",
        input_size: int = 1,
        hidden_size: int = 128,
        num_classes: int = 10,
        forget_bias: float | None = None,
        vocab: int | None = None,
        embed: int = 32,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLS)}")
        self.impl = impl
        self.embed = nn.Embedding(vocab, embed) if vocab else None  # tokens -> vectors; None: numbers in
        input_size = embed if vocab else input_size
        if impl == "fused":
            self.rnn = FUSED[cell](input_size, hidden_size, batch_first=True)
        else:
            self.rnn = ScratchRecurrent(cell, input_size, hidden_size)
        if forget_bias is not None and cell in ("lstm", "gru"):
            set_keep_bias(self.rnn, hidden_size, forget_bias)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # -> logits (B, num_classes)
        if self.embed is not None:
            x = self.embed(x.long())  # tokens (B, T) -> (B, T, embed)
        elif x.dim() == 2:
            x = x.unsqueeze(-1)  # (B, T) -> (B, T, 1): one scalar per step
        if self.impl == "fused":
            out, _ = self.rnn(x)  # (B, T, H)
            h = out[:, -1]
        else:
            h = self.rnn(x)
        return self.head(h)
