"""The torch zoo: real modules built the way people build them, for tests/flavors/test_torch_zoo.py.

Each builder returns ``(module in eval mode, example input)``, deterministic (seeded), where the
example is a tensor or a dict of tensors (modelpack calls ``module(**dict)``). The user classes
below reproduce torchvision's construction patterns (torchvision itself is not installed): a
block class and a layer list as constructor arguments, ``functools.partial`` norm layers, a
config list that is not kept, ``nn.Sequential`` subclasses, parameters held directly (class
token, positional embedding), ``None`` children, a module and a callable as arguments. They must
be importable by name, as a saved class must be.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Example = torch.Tensor | dict[str, torch.Tensor]
Built = tuple[Any, Example]

HERE = __name__  # "tests.flavors.torch_zoo_models": the prefix of the names to trust


def _name(cls: type) -> str:
    return f"{HERE}.{cls.__qualname__}"


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _tokens(batch: int, length: int, vocab: int, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen, dtype=torch.int64)


def _settle(module: nn.Module) -> nn.Module:
    """Eval mode, with batch-norm running statistics that are not the initial 0/1."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.running_mean is not None:
                sub.running_mean.copy_(torch.randn(sub.running_mean.shape, generator=gen) * 0.1)
                assert sub.running_var is not None
                sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=gen) + 0.5)
                assert sub.num_batches_tracked is not None
                sub.num_batches_tracked.fill_(7)
    return module.eval()


# -- torch.nn only: load with no trust at all ---------------------------------------------------


def seq_mlp() -> Built:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval(), _randn(5, 4)


def seq_conv() -> Built:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    return _settle(model), _randn(2, 3, 16, 16)


def lstm() -> Built:
    # forward returns (out, (h, c)): a nested tuple
    torch.manual_seed(0)
    return nn.LSTM(4, 8, num_layers=2, batch_first=True).eval(), _randn(2, 5, 4)


def gru() -> Built:
    torch.manual_seed(0)
    return nn.GRU(4, 8, batch_first=True).eval(), _randn(2, 5, 4)


def rnn() -> Built:
    torch.manual_seed(0)
    model = nn.RNN(4, 6, nonlinearity="relu", batch_first=True, bidirectional=True)
    return model.eval(), _randn(2, 5, 4)


def transformer_encoder() -> Built:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2).eval(), _randn(2, 6, 16)


def transformer() -> Built:
    torch.manual_seed(0)
    model = nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=32,
        batch_first=True,
    )
    return model.eval(), {"src": _randn(2, 6, 16, seed=1), "tgt": _randn(2, 5, 16, seed=2)}


def multihead_attention() -> Built:
    # forward(query, key, value) returns (attn_output, attn_weights averaged over heads)
    torch.manual_seed(0)
    model = nn.MultiheadAttention(16, 2, batch_first=True)
    example = {
        "query": _randn(2, 5, 16, seed=1),
        "key": _randn(2, 7, 16, seed=2),
        "value": _randn(2, 7, 16, seed=3),
    }
    return model.eval(), example


def seq_embedding() -> Built:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    return model.eval(), _tokens(2, 5, 20)


def seq_embedding_bag() -> Built:
    # a 2-d input is a batch of equal-length bags: [batch, bag] -> [batch, dim]
    torch.manual_seed(0)
    model = nn.Sequential(nn.EmbeddingBag(20, 8, mode="mean"), nn.Linear(8, 3))
    return model.eval(), _tokens(3, 4, 20)


def seq_conv1d_groupnorm() -> Built:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(4, 8, 3),
        nn.GroupNorm(2, 8),
        nn.GELU(),
        nn.Conv1d(8, 4, 1),
        nn.Dropout(0.5),
    )
    return model.eval(), _randn(2, 4, 10)


def seq_upsampling() -> Built:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.ConvTranspose2d(3, 8, 2, stride=2),  # 4x4 -> 8x8
        nn.Upsample(scale_factor=2, mode="nearest"),  # -> 16x16
        nn.Conv2d(8, 16, 3, padding=1),
        nn.PixelShuffle(2),  # 16 channels -> 4 channels, 32x32
        nn.Dropout(0.2),
        nn.LayerNorm([4, 32, 32]),
    )
    return model.eval(), _randn(2, 3, 4, 4)


def identity() -> Built:
    return nn.Identity().eval(), _randn(3, 4)


# -- user classes, torchvision style: each class needs trust -----------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample  # None (a plain attribute) when the shapes already agree
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNetLike(nn.Module):
    """torchvision's ResNet: the block class and the layer counts are constructor arguments.

    ``norm_layer`` (a ``functools.partial``) reaches the children only; ``block`` and ``layers``
    are not kept; ``inplanes``, ``groups`` and ``base_width`` are (as torchvision keeps them).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 10,
        width: int = 8,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes = width
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0], 1, norm_layer)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, norm_layer)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 2 * block.expansion, num_classes)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        norm_layer: Callable[..., nn.Module],
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(planes * block.expansion),
            )
        extra: dict[str, Any] = {}
        if block is Bottleneck:
            extra = {"groups": self.groups, "base_width": self.base_width}
        layers: list[nn.Module] = [
            block(self.inplanes, planes, stride, downsample, norm_layer, **extra)
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, norm_layer=norm_layer, **extra))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_like() -> Built:
    torch.manual_seed(0)
    norm = functools.partial(nn.BatchNorm2d, eps=1e-3)
    model = ResNetLike(BasicBlock, [2, 1], num_classes=5, norm_layer=norm)
    return _settle(model), _randn(2, 3, 16, 16)


def resnet_bottleneck() -> Built:
    torch.manual_seed(0)
    model = ResNetLike(Bottleneck, [1, 1], num_classes=3, width=4, groups=2, width_per_group=32)
    return _settle(model), _randn(2, 3, 16, 16)


class ConvNormActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation: a user subclass of nn.Sequential."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=0.001, momentum=0.01),
        ]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    def __init__(
        self,
        in_channels: int,
        kernel: int,
        expanded: int,
        out_channels: int,
        use_se: bool,
        activation: str,
        stride: int,
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormActivation(in_channels, expanded, 1, activation_layer=act))
        layers.append(
            ConvNormActivation(expanded, expanded, kernel, stride, expanded, activation_layer=act)
        )
        if use_se:
            layers.append(SqueezeExcitation(expanded, max(8, expanded // 4)))
        layers.append(ConvNormActivation(expanded, out_channels, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels
        self._is_cn = stride > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


# (in, kernel, expanded, out, use_se, activation, stride), as torchvision's MobileNetV3 settings
MOBILENET_CONFIG = [
    (8, 3, 8, 8, True, "RE", 2),
    (8, 3, 24, 12, False, "RE", 2),
    (12, 3, 36, 12, False, "RE", 1),
    (12, 5, 48, 16, True, "HS", 2),
]


class MobileNetLike(nn.Module):
    """torchvision's MobileNetV3: built from a config list that is not kept."""

    def __init__(
        self,
        config: Sequence[tuple[int, int, int, int, bool, str, int]],
        last_channel: int = 32,
        num_classes: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        first = config[0][0]
        layers: list[nn.Module] = [
            ConvNormActivation(3, first, 3, stride=2, activation_layer=nn.Hardswish)
        ]
        layers += [InvertedResidual(*setting) for setting in config]
        last_in = config[-1][3]
        layers.append(ConvNormActivation(last_in, 6 * last_in, 1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * last_in, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenet_like() -> Built:
    torch.manual_seed(0)
    return _settle(MobileNetLike(MOBILENET_CONFIG)), _randn(2, 3, 32, 32)


class ViTLike(nn.Module):
    """torchvision's VisionTransformer: parameters held directly, nn.TransformerEncoder inside."""

    def __init__(
        self,
        image_size: int = 16,
        patch_size: int = 4,
        hidden_dim: int = 16,
        num_layers: int = 2,
        num_heads: int = 2,
        mlp_dim: int = 32,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.seq_length = (image_size // patch_size) ** 2 + 1
        self.class_token = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, self.seq_length, hidden_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, mlp_dim, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(hidden_dim, eps=1e-6), enable_nested_tensor=False
        )
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).flatten(2).permute(0, 2, 1)  # [n, patches, hidden]
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.heads(self.encoder(x)[:, 0])


def vit_like() -> Built:
    torch.manual_seed(0)
    return ViTLike().eval(), _randn(2, 3, 16, 16)


class Wrapper(nn.Module):
    """A module and a callable as constructor arguments, both kept as attributes."""

    def __init__(
        self,
        backbone: nn.Module,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.tanh,
        scale: float = 2.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.activation = activation  # torch.tanh: a builtin, not a module
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.backbone(x)) * self.scale


def wrapper() -> Built:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 3))
    return Wrapper(backbone=backbone, activation=torch.tanh).eval(), _randn(5, 4)


class PartialActivation(nn.Module):
    """Holds ``functools.partial(F.gelu, approximate="tanh")`` as an attribute."""

    def __init__(self, features: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(features, features)
        self.act = functools.partial(F.gelu, approximate="tanh")
        self.out = nn.Linear(features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.proj(x)))


def partial_activation() -> Built:
    torch.manual_seed(0)
    return PartialActivation().eval(), _randn(4, 6)


def seq_with_user_block() -> Built:
    # A torch.nn container whose child is a user class: that class still needs trust.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), BasicBlock(8, 8), nn.AdaptiveAvgPool2d(1))
    return _settle(model), _randn(2, 3, 8, 8)


# -- Hugging Face transformers, tiny random configs (nothing downloaded) ----------------------


def _text_inputs(vocab: int = 100) -> dict[str, torch.Tensor]:
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0  # padding in the second row
    return {"input_ids": _tokens(2, 8, vocab), "attention_mask": mask}


def _bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=64,
        **extra,
    )


def hf_bert() -> Built:
    from transformers import BertModel

    torch.manual_seed(0)
    return BertModel(_bert_config()).eval(), _text_inputs()


def hf_bert_classifier() -> Built:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(_bert_config(num_labels=3))
    return model.eval(), _text_inputs()


def hf_distilbert() -> Built:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    # Eager attention, not the default sdpa: a loader must keep this choice, which
    # config.to_dict() / save_pretrained leave out (it is config._attn_implementation).
    eager: dict[str, Any] = {"attn_implementation": "eager"}
    config = DistilBertConfig(
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        vocab_size=100,
        max_position_embeddings=64,
        **eager,
    )
    return DistilBertModel(config).eval(), _text_inputs()


def hf_gpt2() -> Built:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    # use_cache=False: by default the output also holds past_key_values, a Cache object.
    # bos/eos default to 50256, outside this vocabulary (transformers logs about it).
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        vocab_size=100,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return GPT2Model(config).eval(), _text_inputs()


def hf_vit() -> Built:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return ViTModel(config).eval(), {"pixel_values": _randn(2, 3, 32, 32)}


# -- TorchScript: torch.jit.load at load time, no trust needed ---------------------------------


@contextlib.contextmanager
def _jit_deprecated() -> Iterator[None]:
    # torch 2.13 deprecates torch.jit.script, trace and trace_method (which trace calls), with
    # a DeprecationWarning each; people still ship TorchScript, so the zoo still builds it.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.\w+` is deprecated",
            category=DeprecationWarning,
        )
        yield


def jit_script() -> Built:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    with _jit_deprecated():
        return torch.jit.script(model), _randn(5, 4)


def jit_trace() -> Built:
    # A traced user class: the TorchScript program, not the class, is what loads.
    model, example = resnet_like()
    with _jit_deprecated():
        return torch.jit.trace(model, example), example


# -- torch.export: an ExportedProgram (.pt2); loading it needs trust=True ----------------------


def exported() -> Built:
    model, example = seq_conv()
    return torch.export.export(model, (example,)), example


def exported_dynamic() -> Built:
    # A user class exported with a dynamic batch dimension.
    model, example = mobilenet_like()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    return program, example


# -- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooCase:
    id: str
    build: Callable[[], Built]
    kind: str  # "torch.nn", "user", "hf", "torchscript" or "export"
    # What a fresh process passes as modelpack.load(trust=...): None, exact names, or True.
    trust: tuple[str, ...] | bool | None = None


def _names(*classes: type) -> tuple[str, ...]:
    return tuple(_name(c) for c in classes)


CASES: list[ZooCase] = [
    ZooCase("seq_mlp", seq_mlp, "torch.nn"),
    ZooCase("seq_conv", seq_conv, "torch.nn"),
    ZooCase("lstm", lstm, "torch.nn"),
    ZooCase("gru", gru, "torch.nn"),
    ZooCase("rnn", rnn, "torch.nn"),
    ZooCase("transformer_encoder", transformer_encoder, "torch.nn"),
    ZooCase("transformer", transformer, "torch.nn"),
    ZooCase("multihead_attention", multihead_attention, "torch.nn"),
    ZooCase("seq_embedding", seq_embedding, "torch.nn"),
    ZooCase("seq_embedding_bag", seq_embedding_bag, "torch.nn"),
    ZooCase("seq_conv1d_groupnorm", seq_conv1d_groupnorm, "torch.nn"),
    ZooCase("seq_upsampling", seq_upsampling, "torch.nn"),
    ZooCase("identity", identity, "torch.nn"),
    ZooCase("resnet_like", resnet_like, "user", _names(ResNetLike, BasicBlock)),
    ZooCase("resnet_bottleneck", resnet_bottleneck, "user", _names(ResNetLike, Bottleneck)),
    ZooCase(
        "mobilenet_like",
        mobilenet_like,
        "user",
        _names(MobileNetLike, InvertedResidual, ConvNormActivation, SqueezeExcitation),
    ),
    ZooCase("vit_like", vit_like, "user", _names(ViTLike)),
    # torch.tanh and F.gelu (in a partial) are on the reviewed list: only the classes are asked.
    ZooCase("wrapper", wrapper, "user", _names(Wrapper)),
    ZooCase("partial_activation", partial_activation, "user", _names(PartialActivation)),
    ZooCase("seq_with_user_block", seq_with_user_block, "user", _names(BasicBlock)),
    ZooCase("hf_bert", hf_bert, "hf"),
    ZooCase("hf_bert_classifier", hf_bert_classifier, "hf"),
    ZooCase("hf_distilbert", hf_distilbert, "hf"),
    ZooCase("hf_gpt2", hf_gpt2, "hf"),
    ZooCase("hf_vit", hf_vit, "hf"),
    ZooCase("jit_script", jit_script, "torchscript"),
    ZooCase("jit_trace", jit_trace, "torchscript"),
    ZooCase("exported", exported, "export", True),
    ZooCase("exported_dynamic", exported_dynamic, "export", True),
]
