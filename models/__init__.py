"""Models of the studies: a VGG-style CNN, an MLP (and one written in NumPy), the split-axis MLP
(an MLP along the rows and one along the columns), recurrent classifiers (RNN, LSTM, GRU), and word-level
language models (stacked LSTM or GRU with a carried state, causal Transformer)."""

from models.cnn import VGG
from models.lm import RecurrentLM, TransformerLM
from models.mlp import MLP
from models.numpy_mlp import MLP_IMPLS, NumpyMLP
from models.rnn import CELLS, IMPLS, RecurrentClassifier
from models.split_mlp import SplitMLP

__all__ = [
    "CELLS",
    "IMPLS",
    "MLP",
    "MLP_IMPLS",
    "NumpyMLP",
    "VGG",
    "RecurrentClassifier",
    "RecurrentLM",
    "SplitMLP",
    "TransformerLM",
]
