"""K models of one architecture as one batched model: the seeds of a configuration trained together.

`pack(models)` stacks the parameters of K models (K seeds: each its own initialisation) into one
module whose parameters carry a leading seed axis, and whose forward takes the K seeds' batches
stacked, (K, B, ...), and returns (K, B, classes). Every layer is a grouped matmul (`torch.baddbmm`
over the seed axis) and elementwise ops, so seed k's outputs and gradients depend on seed k's
parameters and batch only: the sum over seeds of the per-seed losses gives each seed exactly the
gradient of its own loss, and elementwise optimizers (Adam, NAdam, RMSprop, SGD) update each seed as
K separate optimizers would. `unpack_into(models)` writes the parameters back into the K models
(for evaluation and checkpoints), and `load_from(models)` reads them in place (on resume).

What packs (`packable`): the MLP, the NumPy MLP (its NumPy forward and backward run the seed axis
as batched matmuls) and the recurrent classifiers (RNN, LSTM, GRU, fused or scratch, with or without
an embedding). The VGG does not: BatchNorm's batch statistics would need a grouped
norm of their own, and its convolutions already fill the device.

Recurrent cells are written out with torch.nn's equations (see models.rnn). The LSTM's gates are
stored in the order i, f, o, g (torch.nn: i, f, g, o), so that one sigmoid covers three gates and
every slice's backward is a concatenation rather than a zero-filled scatter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.mlp import MLP
from models.numpy_mlp import NumpyMLP, numpy_pass
from models.rnn import RecurrentClassifier


def _lstm_order(w: torch.Tensor) -> torch.Tensor:  # torch.nn's i,f,g,o -> i,f,o,g (rows); self-inverse
    i, f, g, o = w.chunk(4, 0)
    return torch.cat([i, f, o, g], 0)


class Packed(nn.Module):
    """Stacked parameters with a leading seed axis, each made from one parameter of the K models by
    `to_packed` (and written back by `to_model`, its inverse)."""

    def __init__(self, models: list[nn.Module], layout: dict[str, tuple[str, callable, callable]]):
        super().__init__()
        self.k = len(models)
        self.layout = layout  # packed name -> (model parameter name, to_packed, to_model)
        params = [dict(m.named_parameters()) for m in models]
        for name, (src, to_packed, _) in layout.items():
            self.register_parameter(name, nn.Parameter(torch.stack([to_packed(p[src].detach()) for p in params])))

    @torch.no_grad()
    def unpack_into(self, models: list[nn.Module]) -> None:
        for k, m in enumerate(models):
            params = dict(m.named_parameters())
            for name, (src, _, to_model) in self.layout.items():
                params[src].copy_(to_model(getattr(self, name)[k]))

    @torch.no_grad()
    def load_from(self, models: list[nn.Module]) -> None:
        for k, m in enumerate(models):
            params = dict(m.named_parameters())
            for name, (src, to_packed, _) in self.layout.items():
                getattr(self, name)[k].copy_(to_packed(params[src]))


def _same(w):
    return w


def _t(w):  # a Linear weight (out, in) as (in, out), for x @ W
    return w.T.contiguous()


def _row(b):  # a bias (n,) as (1, n), added to every row of a (B, n) batch
    return b.unsqueeze(0)


def _unrow(b):
    return b.squeeze(0)


class PackedMLP(Packed):
    def __init__(self, models: list[MLP]):
        linears = [n for n, m in models[0].net.named_children() if isinstance(m, nn.Linear)]
        layout = {}
        for i, n in enumerate(linears):
            layout[f"w{i}"] = (f"net.{n}.weight", _t, _t)
            layout[f"b{i}"] = (f"net.{n}.bias", _row, _unrow)
        super().__init__(models, layout)
        self.layers = len(linears)
        self.dropout = next((m.p for m in models[0].net if isinstance(m, nn.Dropout)), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, ...) -> (K, B, classes)
        x = x.flatten(2)
        for i in range(self.layers):
            x = torch.baddbmm(getattr(self, f"b{i}"), x, getattr(self, f"w{i}"))
            if i < self.layers - 1:
                x = torch.relu(x)
                if self.dropout:
                    x = F.dropout(x, self.dropout, self.training)
        return x


class PackedNumpyMLP(Packed):
    def __init__(self, models: list[NumpyMLP]):
        n = len(models[0].params)
        super().__init__(models, {f"p{i}": (f"params.{i}", _same, _same) for i in range(n)})
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, ...) -> (K, B, classes)
        return numpy_pass(x.flatten(2), [getattr(self, f"p{i}") for i in range(self.n)])


class PackedRecurrent(Packed):
    def __init__(self, models: list[RecurrentClassifier]):
        m = models[0]
        self.cell = (
            "rnn"
            if isinstance(m.rnn, nn.RNN)
            else "lstm"
            if isinstance(m.rnn, nn.LSTM)
            else "gru"
            if isinstance(m.rnn, nn.GRU)
            else m.rnn.cell
        )
        gates = _lstm_order if self.cell == "lstm" else _same
        layout = {
            "w_ih": ("rnn.weight_ih_l0", lambda w: gates(w).T.contiguous(), lambda w: gates(w.T).contiguous()),
            "w_hh": ("rnn.weight_hh_l0", lambda w: gates(w).T.contiguous(), lambda w: gates(w.T).contiguous()),
            "b_ih": ("rnn.bias_ih_l0", lambda b: _row(gates(b)), lambda b: gates(_unrow(b))),
            "b_hh": ("rnn.bias_hh_l0", lambda b: _row(gates(b)), lambda b: gates(_unrow(b))),
            "w_head": ("head.weight", _t, _t),
            "b_head": ("head.bias", _row, _unrow),
        }
        if m.embed is not None:
            layout["embed"] = ("embed.weight", _same, _same)
        super().__init__(models, layout)
        self.hidden_size = m.head.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, T) or (K, B, T, I) -> (K, B, classes)
        K, B, T = x.shape[:3]
        H = self.hidden_size
        if "embed" in self.layout:  # tokens: each seed reads its own embedding table
            x = self.embed[torch.arange(K, device=x.device).view(K, 1, 1), x.long()]
        elif x.dim() == 3:
            x = x.unsqueeze(-1)
        # input projections of every step at once; the RNN and LSTM fold both biases in here
        bias = self.b_ih if self.cell == "gru" else self.b_ih + self.b_hh
        xs = torch.baddbmm(bias, x.reshape(K, B * T, -1), self.w_ih).view(K, B, T, -1).unbind(2)
        h = xs[0].new_zeros(K, B, H)  # in the projections' dtype (bf16 under autocast)
        c = xs[0].new_zeros(K, B, H)
        for t in range(T):
            if self.cell == "rnn":
                h = torch.tanh(torch.baddbmm(xs[t], h, self.w_hh))
            elif self.cell == "lstm":
                s, g = torch.baddbmm(xs[t], h, self.w_hh).split([3 * H, H], -1)
                i, f, o = torch.sigmoid(s).split(H, -1)
                c = torch.addcmul(f * c, i, torch.tanh(g))
                h = o * torch.tanh(c)
            else:  # gru: the reset gate scales only the hidden part of n
                xrz, xn = xs[t].split([2 * H, H], -1)
                hrz, hn = torch.baddbmm(self.b_hh, h, self.w_hh).split([2 * H, H], -1)
                r, z = torch.sigmoid(xrz + hrz).split(H, -1)
                n = torch.tanh(torch.addcmul(xn, r, hn))
                h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
        return torch.baddbmm(self.b_head, h, self.w_head)


PACKED = {MLP: PackedMLP, NumpyMLP: PackedNumpyMLP, RecurrentClassifier: PackedRecurrent}


def packable(model: nn.Module) -> bool:
    """Whether `pack` can stack models like this one."""
    return type(model) in PACKED


def pack(models: list[nn.Module]) -> Packed:
    """The K models as one batched model (see the module docstring)."""
    if type(models[0]) in PACKED:
        return PACKED[type(models[0])](models)
    raise TypeError(f"{type(models[0]).__name__} does not pack; see models.packed.packable")
