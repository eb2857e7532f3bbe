import pytest
import torch

from models import MLP, VGG, RecurrentClassifier


def test_vgg_feature_sizes_on_cifar_and_digits():
    m = VGG(in_channels=3)
    sizes, x = [], torch.zeros(2, 3, 32, 32)
    for layer in m.features:
        x = layer(x)
        if isinstance(layer, (torch.nn.ReLU, torch.nn.MaxPool2d)):
            sizes.append(x.shape[-1])
    assert sizes == [32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2, 1]  # docs/references.md#optimizer_comparison
    assert x.shape == (2, 512, 1, 1)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert VGG(in_channels=1)(torch.zeros(4, 1, 8, 8)).shape == (4, 10)  # digits


def test_mlp_layers_and_dropout():
    m = MLP(3072, hidden=(2048, 1024, 256, 128, 64), dropout=0.5)
    linear = [l for l in m.net if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linear] == [
        (3072, 2048),
        (2048, 1024),
        (1024, 256),
        (256, 128),
        (128, 64),
        (64, 10),
    ]
    assert sum(isinstance(l, torch.nn.Dropout) for l in m.net) == 5
    assert m(torch.zeros(3, 3, 32, 32)).shape == (3, 10)
    assert not any(isinstance(l, torch.nn.Dropout) for l in MLP(64).net)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_scratch_equals_fused_for_equal_weights(cell):
    torch.manual_seed(0)
    fused = RecurrentClassifier(cell, "fused", hidden_size=16)
    scratch = RecurrentClassifier(cell, "scratch", hidden_size=16)
    scratch.load_state_dict(fused.state_dict())  # same names and shapes as torch.nn
    x = torch.randint(0, 10, (8, 7)).float()
    out_f, out_s = fused(x), scratch(x)
    assert out_f.shape == (8, 10)
    torch.testing.assert_close(out_s, out_f, rtol=1e-5, atol=1e-5)
    out_f.sum().backward()
    out_s.sum().backward()
    gf = dict(fused.named_parameters())
    for name, p in scratch.named_parameters():
        torch.testing.assert_close(p.grad, gf[name].grad, rtol=1e-4, atol=1e-5)


def test_scratch_differs_when_weights_differ():
    torch.manual_seed(0)
    a, b = RecurrentClassifier("lstm", "scratch", hidden_size=8), RecurrentClassifier("lstm", "fused", hidden_size=8)
    x = torch.ones(2, 4)
    assert not torch.allclose(a(x), b(x))


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="unknown cell"):
        RecurrentClassifier("transformer")
