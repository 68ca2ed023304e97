"""Write the remote-code files of a saved pruned model: `modeling_prunehead.py` and config.json's `auto_map`.

The modeling file is `template.py` (torch + transformers only) followed by classes generated for the
checkpoint: a config class and, for the saved architecture and its backbone, a subclass of the
transformers class that removes the pruned heads and FFN neurons in `__init__`. config.json's
`model_type` becomes `prunehead-<type>`, which transformers does not know, so loading without
`trust_remote_code=True` fails instead of re-initialising emptied layers at random.
"""

from __future__ import annotations

import json
from pathlib import Path

import transformers
from torch import nn

from . import template
from .template import SITES, TYPE_PREFIX

REMOTE_FILE = "modeling_prunehead.py"
# Auto classes that config.json may route to the generated classes (those that map the architecture).
AUTO_CLASSES = ("AutoModel", "AutoModelForAudioClassification", "AutoModelForCTC", "AutoModelForSpeechSeq2Seq",
                "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                "AutoModelForQuestionAnswering", "AutoModelForMaskedLM", "AutoModelForPreTraining")


def transformers_class(model: nn.Module) -> type:
    """The transformers class `model` is (or whose generated subclass it is)."""
    return next(c for c in type(model).__mro__ if c.__module__.startswith("transformers."))


def auto_classes(model_type: str, class_name: str) -> list[str]:
    """The auto classes whose mapping sends `model_type` to `class_name` (e.g. AutoModelForCTC)."""
    names = []
    for auto in AUTO_CLASSES:
        mapped = getattr(transformers, auto)._model_mapping._model_mapping.get(model_type)
        if class_name == mapped or (isinstance(mapped, tuple) and class_name in mapped):
            names.append(auto)
    return names


def _generated(model_type: str, architectures: list[str]) -> tuple[str, dict[str, str]]:
    """Source of the generated classes and the auto_map entries that point at them."""
    config_name = f"Pruned{transformers.CONFIG_MAPPING[model_type].__name__}"
    lines = [f"class {config_name}(PrunedConfigMixin, transformers.{config_name[6:]}):",
             f'    """{model_type} config read from `model_type: "{TYPE_PREFIX}{model_type}"`."""', "", ""]
    auto_map = {"AutoConfig": f"{REMOTE_FILE[:-3]}.{config_name}"}
    for arch in architectures:
        lines += [f"class Pruned{arch}(PrunedModelMixin, transformers.{arch}):",
                  f'    """transformers.{arch} without the heads and FFN neurons that config.json lists."""', "",
                  f"    config_class = {config_name}", "", ""]
        auto_map |= {auto: f"{REMOTE_FILE[:-3]}.Pruned{arch}" for auto in auto_classes(model_type, arch)}
    return "\n".join(lines).rstrip() + "\n", auto_map


def write_remote_code(model: nn.Module, folder: str | Path) -> None:
    """Add `modeling_prunehead.py` to a folder written by `model.save_pretrained` and point config.json at it.

    The modeling code rebuilds the removed heads and FFN neurons that config.json lists. A model type
    without a layout here (WavLM) gets only the `prunehead-<type>` model_type: plain transformers refuses
    the folder, `prunehead.load` reads it.
    """
    folder = Path(folder)
    model_type = model.config.model_type.removeprefix(TYPE_PREFIX)
    config_path = folder / "config.json"
    if model_type not in SITES:  # refused by plain transformers (unknown type), never wrong
        import warnings

        config = json.loads(config_path.read_text())
        config.update(model_type=TYPE_PREFIX + model_type)
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        warnings.warn(f"{folder}: {model_type} has no portable modeling code yet, so this folder loads with "
                      "prunehead.load only (plain transformers refuses it)", stacklevel=3)
        return
    arch = transformers_class(model).__name__
    backbone = transformers.AutoModel._model_mapping._model_mapping.get(model_type)
    classes = [arch] + ([backbone] if isinstance(backbone, str) and backbone != arch else [])
    code, auto_map = _generated(model_type, classes)
    source = Path(template.__file__).read_text()
    (folder / REMOTE_FILE).write_text(source + "\n\n" + code)
    config = json.loads(config_path.read_text())
    config.update(model_type=TYPE_PREFIX + model_type, auto_map=auto_map, architectures=[arch])
    config_path.write_text(json.dumps(config, indent=2) + "\n")
