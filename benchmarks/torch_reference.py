"""The NeuraStyle recipe in PyTorch, for speed comparisons and as an independent check.

Same network and weights (our ``.npz``, read with `nst_jax.weights.load`), same input
convention, same losses (relative content and Gram errors, total variation), same
Adam on the pixels followed by clipping to [0, 1] -- see `nst_jax.transfer` -- written
the ordinary PyTorch way: NCHW, `F.conv2d`, `torch.optim.Adam`. Nothing past the
content layer is computed and the weights take no gradients.

This module uses only torch, numpy and `nst_jax`'s weights reader and recipe constants,
so `tests/test_torch_reference.py` can import it as ``benchmarks.torch_reference``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from nst_jax.options import Options, network_style_layers
from nst_jax.vgg import layer_names
from nst_jax.weights import Weights


class TorchVGG:
    """The VGG conv stack up to the deepest of `content_layer` and `style_layers`, as frozen
    torch tensors (OIHW kernels).

    channels_last: keep activations and kernels in NHWC memory order (same NCHW logical
    shapes), which oneDNN and cuDNN may run faster; the default is PyTorch's usual layout.
    """

    def __init__(self, weights: Weights, device: str = "cpu", channels_last: bool = False,
                 content_layer: str = Options().content_layer, style_layers: tuple[str, ...] | None = None):
        names = layer_names(weights.arch)
        self.edge_tuned = weights.edge_tuned
        style_layers = style_layers or tuple(dict(network_style_layers(weights.edge_tuned)))
        self.names = names[: max(names.index(n) for n in (content_layer, *style_layers)) + 1]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.convs = {
            n: (torch.from_numpy(weights.params[n]["kernel"].transpose(3, 2, 0, 1)).to(device)
                .contiguous(memory_format=self.memory_format),
                torch.from_numpy(np.asarray(weights.params[n]["bias"])).to(device))
            for n in self.names
        }
        order = [2, 1, 0] if weights.channel_order == "BGR" else [0, 1, 2]
        self.order = torch.tensor(order, device=device)
        self.scale = float(weights.input_scale)
        self.mean = torch.tensor(weights.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(weights.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, rgb: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """ReLU outputs of `layers` for (N, 3, H, W) RGB images in [0, 1]."""
        x = ((rgb[:, self.order] * self.scale - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        out = {}
        for name in self.names:
            if name.endswith("_conv1") and name != "block1_conv1":
                x = F.max_pool2d(x, 2, 2)
            x = F.relu(F.conv2d(x, *self.convs[name], padding=1))
            if name in layers:
                out[name] = x
        return out


def gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


def relative_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, x.ndim))
    return ((x - target) ** 2).mean(dims) / ((target ** 2).mean(dims) + 1e-8)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    dy = ((image[:, :, 1:] - image[:, :, :-1]) ** 2).mean((1, 2, 3))
    dx = ((image[:, :, :, 1:] - image[:, :, :, :-1]) ** 2).mean((1, 2, 3))
    return dx + dy


def to_nchw(image: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) numpy -> (N, 3, H, W) float32 tensor."""
    image = np.asarray(image, np.float32)
    image = image[None] if image.ndim == 3 else image
    return torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2))).to(device)


class TorchStylizer:
    """One image's optimisation: targets from `content` and `style` ((H, W, 3) in [0, 1],
    already at their working sizes), Adam on a copy of the content image."""

    def __init__(self, net: TorchVGG, content: np.ndarray, style: np.ndarray, options: Options = Options()):
        self.net, self.options = net, options
        self.device = net.mean.device
        self.content = to_nchw(content, self.device)
        self.layer_weights = dict(options.style_layers_at(0, net.edge_tuned))  # a one-scale run's
        with torch.no_grad():
            self.target_content = net(self.content, (options.content_layer,))[options.content_layer]
            feats = net(to_nchw(style, self.device), tuple(self.layer_weights))
            self.target_grams = {n: gram(feats[n]) for n in self.layer_weights}
        self.weights = {"content": options.content_weight, "style": options.style_weight, "tv": options.tv_weight}
        self.reset()

    def reset(self, start: np.ndarray | None = None) -> None:
        """Start again from `start` ((H, W, 3), default the content image) with a fresh Adam state."""
        self.image = (self.content.clone() if start is None else to_nchw(start, self.device)).requires_grad_(True)
        self.adam = torch.optim.Adam([self.image], lr=self.options.lr, betas=(0.9, 0.999), eps=1e-8)

    def objective(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, {"content", "style", "tv"} terms) of (1, 3, H, W) `image`; the style
        term is the weighted mean over the style layers."""
        feats = self.net(image, (self.options.content_layer, *self.layer_weights))
        style = sum(w * relative_error(gram(feats[n]), self.target_grams[n])
                    for n, w in self.layer_weights.items()) / sum(self.layer_weights.values())
        terms = {"content": relative_error(feats[self.options.content_layer], self.target_content)[0],
                 "style": style[0], "tv": total_variation(image)[0]}
        return sum(self.weights[name] * term for name, term in terms.items()), terms

    def step(self) -> float:
        """One Adam step then clipping; returns the loss before the step (as `nst_jax` does)."""
        self.adam.zero_grad(set_to_none=True)
        loss, _ = self.objective(self.image)
        loss.backward()
        self.adam.step()
        with torch.no_grad():
            self.image.clamp_(0.0, 1.0)
        return loss.item()

    def run(self, n_steps: int) -> float:
        """`n_steps` steps from the content image with a fresh Adam; returns the seconds they took."""
        self.reset()
        t = time.perf_counter()
        for _ in range(n_steps):
            self.step()  # .item() in step() waits for the device
        return time.perf_counter() - t

    def result(self) -> np.ndarray:
        """The current image, (H, W, 3) numpy."""
        return self.image.detach()[0].permute(1, 2, 0).cpu().numpy()
