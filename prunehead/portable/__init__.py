"""Pruned checkpoints that load anywhere: with plain transformers (remote code), from the Hub, offline.

`write_remote_code(model, folder)` makes a saved pruned model loadable with
`AutoModelFor<Task>.from_pretrained(folder, trust_remote_code=True)` and refused without it;
`read_config(spec)` and `weight_files(spec)` read any folder or hub id (pruned by prunehead, written by
transformers 4 with `pruned_heads`, or plain) through the Hugging Face cache, without running its code.
All per-family knowledge of this package is `template.SITES` (attention) and `template.FFN_SITES`
(feed-forward blocks), keyed by model_type.
"""

from .hub import checkpoint_dtype, read_config, read_state_dict, weight_files
from .remote import REMOTE_FILE, auto_classes, write_remote_code
from .template import FFN_SITES, PRUNED_FFN_KEY, PRUNED_HEADS_KEY, SITES, TYPE_PREFIX

__all__ = ["FFN_SITES", "PRUNED_FFN_KEY", "PRUNED_HEADS_KEY", "REMOTE_FILE", "SITES", "TYPE_PREFIX", "auto_classes",
           "checkpoint_dtype", "read_config", "read_state_dict", "weight_files", "write_remote_code"]
