"""Strict, code-free loading of the evaluation networks.

Nothing downloads: every network is built without weights by its library's own code (lpips,
pytorch-fid / torchvision) or by this package (3D ResNet-50, I3D), then filled from a file the user
provides, read with `torch.load(weights_only=True)` and checked key by key.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import BackboneError


def _import(module: str, package: str):
    """Import a metric library, or one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackboneError(f"the metric needs the {package} package ({exc}); pip install {package}") from exc


# --- strict loading ---------------------------------------------------------------------------


def read_state_dict(path: Path, what: str) -> Mapping[str, torch.Tensor]:
    """torch.load(weights_only=True) on the CPU, with one-line errors naming the file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise BackboneError(f"{what}: {path} does not exist") from exc
    except Exception as exc:  # unpickling refusals, truncated or foreign files: one line, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"{what}: cannot read {path} as a weights-only PyTorch file ({first[:200]}); "
                            f"use the original {path.name}") from exc
    if not isinstance(data, Mapping):
        raise BackboneError(f"{what}: {path} holds a {type(data).__name__}, not a state dict")
    return data


def _names(items: Iterable[str], limit: int = 8) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, path: Path | str,
                assign: bool = False, check_only: bool = False) -> None:
    """Load `state` into `module`, refusing any missing or unexpected key, shape or dtype difference.

    `assign=True` for modules built on the meta device (their tensors are replaced by the file's);
    `check_only=True` only validates. The one tolerated difference: BatchNorm's `num_batches_tracked` counters, which files saved
    before PyTorch 0.4.1 (such as the published 3D ResNet) lack and evaluation never reads.
    """
    expected = module.state_dict()
    state = dict(state)
    for name in expected:
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = expected[name]
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    for name in sorted(set(expected) & set(state)):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(expected[name].shape):
            problems.append(f"{name} has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}")
        elif value.dtype != expected[name].dtype and not name.endswith("num_batches_tracked"):
            problems.append(f"{name} has dtype {value.dtype}, expected {expected[name].dtype}")
    if problems:
        raise BackboneError(f"{what}: {path} does not match the network: " + "; ".join(problems[:6]))
    if not check_only:
        module.load_state_dict(state, strict=True, assign=assign)


# --- the networks -----------------------------------------------------------------------------


def load_lpips(path: Path) -> nn.Module:
    """lpips' VGG LPIPS model: its linear heads from the lpips wheel, the VGG16 trunk from `path`.

    Both networks are built on the meta device (no weight initialisation, no download) and receive
    the files' tensors; the file is first checked against torchvision's whole VGG16 (classifier too).
    """
    lpips = _import("lpips", "lpips")
    torchvision = _import("torchvision", "torchvision")
    ScalingLayer = _import("lpips.lpips", "lpips").ScalingLayer

    state = read_state_dict(path, "lpips")
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about `pretrained=False`
        vgg = torchvision.models.vgg16(weights=None)
        model = lpips.LPIPS(pretrained=False, net="vgg", pnet_rand=True, verbose=False)
    load_strict(vgg, state, "lpips (VGG16)", path, check_only=True)
    model.scaling_layer = ScalingLayer()  # its constant shift/scale, built for real
    # lpips splits VGG16's feature layers into five slices keeping their indices: features.I -> sliceK.I
    trunk = {name: state["features." + name.split(".", 1)[1]] for name in model.net.state_dict()}
    load_strict(model.net, trunk, "lpips (VGG16 trunk)", path, assign=True)
    heads_path = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    heads = read_state_dict(heads_path, "lpips linear heads")
    for index, head in enumerate(model.lins):
        part = {k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith(f"lin{index}.")}
        load_strict(head, part, "lpips linear heads", heads_path, assign=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


class FidInception(nn.Module):
    """pytorch-fid's FID Inception (the TensorFlow 2015-12-05 graph) up to its 2048-d pool3 features.

    Input: float (B, 3, 299, 299) on 0-255 (already resized); normalised as clean-fid does, (x - 128) / 128.
    """

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.inception
        x = (x - 128.0) / 128.0
        x = net.maxpool1(net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x))))
        x = net.maxpool2(net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x)))
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):  # fmt: skip
            x = getattr(net, name)(x)
        return x.mean(dim=(2, 3))


def build_fid_inception() -> nn.Module:
    """The FID Inception architecture, built with pytorch-fid's blocks and no weights (no download)."""
    fid = _import("pytorch_fid.inception", "pytorch-fid")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    return net


def load_fid_inception(path: Path) -> nn.Module:
    net = build_fid_inception()
    load_strict(net, read_state_dict(path, "fid"), "fid (Inception)", path)
    return FidInception(net).eval()


def load_resnet3d50(path: Path) -> nn.Module:
    from .resnet3d import ResNet3d50

    data = read_state_dict(path, "fid_vid")
    state = data.get("state_dict", data)  # the published file wraps the weights with 'arch', 'epoch', ...
    if not isinstance(state, Mapping):
        raise BackboneError(f"fid_vid: {path} has no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = ResNet3d50()
    load_strict(net, state, "fid_vid (3D ResNet-50)", path)
    return net.eval()


def load_i3d(path: Path) -> nn.Module:
    from .i3d import InceptionI3d

    net = InceptionI3d()
    load_strict(net, read_state_dict(path, "fvd"), "fvd (I3D)", path)
    return net.eval()


LOADERS = {"vgg16": load_lpips, "inception": load_fid_inception, "resnet3d50": load_resnet3d50, "i3d": load_i3d}
