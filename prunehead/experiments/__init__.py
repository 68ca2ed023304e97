"""Experiments over many plans with gating (== removal): pruning curves and the speed / accuracy frontier."""
