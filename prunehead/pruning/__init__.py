"""Pruning decisions: which units go (pure, no model touched), as plans.

`plan` (PruningPlan, select), `iterative` (rounds of scoring and removal), `budget` (accuracy and MAC
budgets), `report` (what a prune changed: heads, parameters, MACs).
"""
