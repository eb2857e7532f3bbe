"""Word-level language models: a stacked LSTM or GRU, and a causal Transformer. Both read token ids
(B, T) and return next-word logits flattened over batch and time, (B*T, V): what the training
loop's cross-entropy takes, with the targets flattened the same way.

The recurrent model carries its hidden state from one call to the next (truncated backpropagation
through time: window k+1 of each stream starts from window k's final state, detached, so gradients
stop at the window's edge). The state starts at zero after every switch between training and
evaluation (`train()` / `eval()`): once per iteration of the training loop, and for each held-out
set. The Transformer has no state: each window is its whole context.
"""

from __future__ import annotations

import torch
from torch import nn

from models.rnn import set_keep_bias

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentLM(nn.Module):
    """Embedding -> `layers` stacked LSTM/GRU layers -> Linear over the vocabulary; dropout on the
    embeddings, between layers and before the output (Zaremba et al. 2014)."""

    def __init__(
        self,
        cell: str,
        vocab: int,
        hidden_size: int = 200,
        layers: int = 2,
        dropout: float = 0.0,
        forget_bias: float | None = None,
    ):
        super().__init__()
        if cell not in RECURRENT:
            raise ValueError(f"unknown cell {cell!r} for a language model; choose one of {', '.join(RECURRENT)}")
        self.emb = nn.Embedding(vocab, hidden_size)
        self.rnn = RECURRENT[cell](
            hidden_size, hidden_size, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True
        )
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab)
        if forget_bias is not None:  # every layer's LSTM forget gate or GRU update gate
            set_keep_bias(self.rnn, hidden_size, forget_bias, layers)
        self.state = None  # the last window's final hidden state, detached; None: zeros

    def train(self, mode: bool = True) -> RecurrentLM:
        self.state = None  # a new pass over a text starts from zeros
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T) ids -> logits (B*T, V)
        state = self.state
        if state is not None and _batch(state) != x.shape[0]:
            state = None
        h, state = self.rnn(self.drop(self.emb(x)), state)  # h: (B, T, H)
        self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return self.out(self.drop(h)).flatten(0, 1)


def _batch(state) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]  # (layers, B, H)


class TransformerLM(nn.Module):
    """Token and learned position embeddings -> `layers` pre-norm Transformer blocks with `heads`
    heads of causal self-attention -> LayerNorm -> Linear over the vocabulary."""

    def __init__(
        self,
        vocab: int,
        hidden_size: int = 200,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.0,
        max_len: int = 35,
    ):
        super().__init__()
        if hidden_size % heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by heads={heads}")
        self.emb = nn.Embedding(vocab, hidden_size)
        self.pos = nn.Embedding(max_len, hidden_size)
        block = nn.TransformerEncoderLayer(
            hidden_size, heads, 4 * hidden_size, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T) ids -> logits (B*T, V)
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)
        h = self.drop(self.emb(x) + self.pos(pos))  # (B, T, H)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)  # -inf above the diagonal
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.out(self.norm(h)).flatten(0, 1)
