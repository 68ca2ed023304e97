"""The contract every model family implements: everything prunehead knows about one architecture.

A `Family` answers, for a loaded model of its architecture: where the encoder's self-attention blocks are
(`sites`), how many heads of what width they have, how to remove heads from a block or empty it
(`slice_heads_`, `empty_`), how to run the encoder from the hidden state entering layer l for cached HIB
(`runner`), how to route attention through prunehead's attention function (`routed`), how to switch to an
exportable attention (`exportable`), what an example input looks like (`example_inputs`), and where each
layer's feed-forward block is (`ffn_sites`, `intermediate_size`; the default finds the common layouts). Adding a
family = one subclass in this package + its entry in `prunehead.families.FAMILIES` + tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from ..errors import UnsupportedModelError
from ..portable.template import BiasOnly, EmptyAttention  # noqa: F401 - one definition, travels with saved models
from .runner import LayerRunner


@dataclass
class AttentionSite:
    """One self-attention block of layer `layer`.

    `module` is the module that calls the attention function (receives q/k/v); `q`, `k`, `v` are its
    input projections and `out` the output projection that mixes the heads. `owner.attr` is where
    `module` is attached (so an emptied layer can be swapped for a bias-only block); for BERT the
    output projection lives on `out_owner.out_attr`, for the others on `module` itself.
    """

    layer: int
    module: nn.Module
    q: nn.Linear | None
    k: nn.Linear | None
    v: nn.Linear | None
    out: nn.Module
    owner: nn.Module
    attr: str
    out_owner: nn.Module
    out_attr: str


@dataclass
class FFNSite:
    """The feed-forward block of layer `layer`: `intermediate` (D -> I, one output row per neuron) then an
    activation, then `output` (I -> D, one input column per neuron). `intermediate_size` is I as configured."""

    layer: int
    intermediate: nn.Linear
    output: nn.Linear
    intermediate_size: int


# (intermediate, output) attribute paths inside an encoder layer, tried in order by the default `ffn_sites`.
FFN_PATHS: tuple[tuple[str, str], ...] = (
    ("feed_forward.intermediate_dense", "feed_forward.output_dense"),  # wav2vec2, HuBERT, data2vec, WavLM
    ("fc1", "fc2"),  # Whisper, BART-style
    ("intermediate.dense", "output.dense"),  # BERT family
)


def make_site(layer: int, owner: nn.Module, attr: str, names: tuple[str, str, str], out_owner: nn.Module,
              out_attr: str) -> AttentionSite:
    """The site of `owner.attr` with projections named `names` and output projection `out_owner.out_attr`."""
    module = getattr(owner, attr)
    q, k, v = (getattr(module, n, None) for n in names)
    return AttentionSite(layer, module, q, k=k, v=v, out=getattr(out_owner, out_attr), owner=owner, attr=attr,
                         out_owner=out_owner, out_attr=out_attr)


def output_bias(linear: nn.Module) -> torch.Tensor:
    """The output projection's bias, or zeros on its device and dtype when it has none."""
    bias = getattr(linear, "bias", None)
    if bias is not None:
        return bias
    weight = linear.weight
    return torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _child_name(parent: nn.Module, child: nn.Module) -> str:
    return next(name for name, module in parent.named_children() if module is child)


def head_index(positions: list[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """(len(positions) * head_dim,) feature indices of the heads at `positions` in a projection."""
    return torch.cat([torch.arange(p * head_dim, (p + 1) * head_dim, device=device) for p in positions])


class Family:
    """Architecture knowledge for one family of models (see the module docstring)."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    projections: ClassVar[tuple[str, str, str]] = ("q_proj", "k_proj", "v_proj")

    # -- layout ------------------------------------------------------------------------------------------

    def feature_extractor(self, config: Any, rate: int) -> Any:
        """The feature extractor `config` implies at `rate` Hz (for a model directory that ships none)."""
        from ..errors import InputError

        raise InputError(f"no default feature extractor for model type {config.model_type!r}; "
                         "save the model's feature extractor beside it")

    def export_inputs(self, model: nn.Module) -> tuple[str, tuple[str, ...], dict[str, int]]:
        """(input kind, the graph's input names, shape facts) of this family's exported graph
        (`prunehead.export.onnx.signature`)."""
        raise UnsupportedModelError(f"{type(model).__name__}: no ONNX inputs are known for this family")

    def audio_classifier(self) -> type:
        """The transformers class that puts a classification head on this family's encoder."""
        import transformers

        return transformers.AutoModelForAudioClassification

    def freeze_front_end_(self, model: nn.Module) -> None:
        """Stop gradients into the convolutional front end (fine-tuning's `freeze_feature_encoder`)."""
        if hasattr(model, "freeze_feature_encoder"):
            model.freeze_feature_encoder()

    def num_heads(self, config: Any) -> int:
        return config.num_attention_heads

    def hidden_size(self, config: Any) -> int:
        return config.hidden_size

    def encoder(self, model: nn.Module) -> nn.Module:
        """The module whose `layers` are the encoder layers."""
        raise NotImplementedError

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self.encoder(model).layers

    def fixed_layers(self, model: nn.Module) -> frozenset[int]:
        """Encoder layers that cannot be removed outright (`prunehead.units.depth`); none by default."""
        return frozenset()

    def sites(self, model: nn.Module) -> list[AttentionSite]:
        """One site per encoder layer, in layer order."""
        raise NotImplementedError

    def min_input_samples(self, config: Any) -> int:
        """The shortest waveform (samples) the convolutional front end turns into one frame: its receptive
        field (400 = 25 ms at 16 kHz for wav2vec2's); 0 for models without one (Whisper pads, text)."""
        kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
        if not kernels or not strides:
            return 0
        field, jump = 1, 1
        for kernel, stride in zip(kernels, strides):
            field, jump = field + (int(kernel) - 1) * jump, jump * int(stride)
        return field

    def intermediate_size(self, config: Any) -> int:
        """I: the configured width of every encoder layer's feed-forward block."""
        return config.intermediate_size

    ffn_paths: ClassVar[tuple[tuple[str, str], ...]] = FFN_PATHS

    def ffn_sites(self, model: nn.Module) -> list[FFNSite]:
        """One feed-forward block per encoder layer, in layer order (the first of `ffn_paths` each layer has).

        Raises:
            UnsupportedModelError: a layer has none of the known (intermediate, output) pairs.
        """
        size = self.intermediate_size(model.config)
        sites = []
        for i, layer in enumerate(self.layers(model)):
            pair = next(((layer.get_submodule(a), layer.get_submodule(b)) for a, b in self.ffn_paths
                         if _has_submodule(layer, a) and _has_submodule(layer, b)), None)
            if pair is None:
                raise UnsupportedModelError(f"no feed-forward block found in {type(layer).__name__} (looked for "
                                            f"{', '.join(a + ' / ' + b for a, b in self.ffn_paths)})")
            sites.append(FFNSite(i, pair[0], pair[1], size))
        return sites

    # -- convolution channels (prunehead.units.conv) --------------------------------------------------------

    conv_widths_in_config: ClassVar[bool] = False  # the config states every conv layer's width (conv_dim)

    def conv_layers(self, model: nn.Module) -> list[nn.Module]:
        """The convolutions whose output channels are units, in order (torch-pruning finds what they feed)."""
        raise UnsupportedModelError(f"{type(model).__name__} has no convolutional front end to prune")

    def conv_root(self, model: nn.Module) -> nn.Module:
        """The module whose forward on `conv_inputs` traces the conv channels' dependencies."""
        raise UnsupportedModelError(f"{type(model).__name__} has no convolutional front end to prune")

    def conv_inputs(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """An example input of `conv_root` (on the model's device)."""
        raise UnsupportedModelError(f"{type(model).__name__} has no convolutional front end to prune")

    def conv_widths(self, config: Any) -> list[int]:
        """Every conv layer's width as the config builds it."""
        raise UnsupportedModelError(f"model type {config.model_type!r} has no convolutional front end to prune")

    def set_conv_widths_(self, config: Any, widths: list[int]) -> None:
        """Write the conv widths into `config` (families with `conv_widths_in_config`)."""
        raise NotImplementedError

    # -- surgery -----------------------------------------------------------------------------------------

    def slice_heads_(self, site: AttentionSite, positions: list[int], head_dim: int) -> None:
        """Keep only the heads at `positions` (current order) of `site`: q/k/v rows, output columns."""
        index = head_index(positions, head_dim, site.out.weight.device)
        for name in ("q", "k", "v"):
            linear = getattr(site, name)
            setattr(site.module, _child_name(site.module, linear), prune_linear_layer(linear, index, dim=0))
        setattr(site.out_owner, site.out_attr, prune_linear_layer(site.out, index, dim=1))
        for attr in ("num_heads", "num_attention_heads"):
            if hasattr(site.module, attr):
                setattr(site.module, attr, len(positions))
        if hasattr(site.module, "all_head_size"):
            site.module.all_head_size = len(positions) * head_dim

    def empty_(self, site: AttentionSite) -> None:
        """Replace a block that loses every head by one that returns the output bias (== all gated to 0)."""
        setattr(site.owner, site.attr, EmptyAttention(output_bias(site.out)))

    # -- running -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def routed(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the model's attention calls `prunehead.control.prunehead_attention`.

        Families whose attention goes through transformers' `AttentionInterface` need nothing here:
        `controlled` switches the configs' attention implementation. Others swap their blocks.
        """
        yield

    @contextlib.contextmanager
    def exportable(self, model: nn.Module) -> Iterator[None]:
        """Every config of `model` (sub-configs too) on eager attention inside the block; restored after."""
        configs = {id(m.config): m.config for m in model.modules()
                   if hasattr(getattr(m, "config", None), "_attn_implementation_internal")}
        saved = {key: config._attn_implementation_internal for key, config in configs.items()}
        try:
            for config in configs.values():
                config._attn_implementation_internal = "eager"
            yield
        finally:
            for key, config in configs.items():
                config._attn_implementation_internal = saved[key]

    def runner(self, model: nn.Module) -> LayerRunner | None:
        """Runs the encoder from the state entering layer l (cached HIB); None where only full passes are safe."""
        return None

    def example_inputs(self, model: nn.Module, seconds: float = 1.0, batch: int = 1,
                       device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for counting and timing: `seconds` of 16 kHz audio, seeded."""
        generator = torch.Generator().manual_seed(0)
        values = torch.randn(batch, int(16000 * seconds), generator=generator)  # (B, T), drawn on the CPU
        return {"input_values": values.to(device or "cpu")}
