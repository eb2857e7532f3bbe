"""VGG-style CNN of the hand-run CIFAR-10 reports (docs/references.md#optimizer_comparison).

Each "conv" is Conv2d(3x3, stride 1, pad 1) + BatchNorm2d + ReLU; each pool is
MaxPool2d(k3, s2, p1). On 32x32 inputs the feature maps are 32,16,16,8,8,8,4,4,4,2,2,2,1;
the k3/s2/p1 pools never go below 1x1, so the same network runs on 8x8 digits and 28x28
Fashion-MNIST as well. `width` scales every layer's channels (0.25: 16..128, for CPU budgets).
"""

from __future__ import annotations

from torch import nn

# "M" is a pool; integers are conv output channels.
LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            else:
                v = max(1, round(v * width))
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes))

    def forward(self, x):  # x: (B, C, H, W) -> (B, num_classes)
        x = self.features(x)  # (B, 512, h, w), h = w = 1 for inputs up to 32x32
        if x.shape[-1] > 1:
            x = x.amax(dim=(2, 3), keepdim=True)  # larger inputs: global max pool
        return self.head(x)
