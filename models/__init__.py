"""Models of the studies: a VGG-style CNN, an MLP, and recurrent classifiers (RNN, LSTM, GRU)."""

from models.cnn import VGG
from models.mlp import MLP
from models.rnn import CELLS, IMPLS, RecurrentClassifier

__all__ = ["CELLS", "IMPLS", "MLP", "VGG", "RecurrentClassifier"]
