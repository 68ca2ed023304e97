"""Training: `finetune` (a model folder out), recovery after pruning, and the data-parallel engine."""
