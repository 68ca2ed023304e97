"""One way to print a before/after ratio, everywhere: "1.16x smaller (86.6%)", "1.06x slower".

A ratio is always written as a factor >= 1 with its direction in words, and sizes also as the
percentage that is left, so "x0.866" and "x1.155" for the same change cannot both appear.
"""

from __future__ import annotations

SAME = 0.005  # changes under 0.5 % are "the same"


def format_ratio(before: float, after: float) -> str:
    """A size change: '1.16x smaller (86.6%)', '1.05x larger (105.0%)', 'the same (100.0%)'."""
    if before <= 0:
        raise ValueError(f"format_ratio needs a positive 'before', got {before}")
    share = after / before
    if abs(share - 1) < SAME:
        return f"the same ({share:.1%})"
    if after <= 0:
        return f"all removed ({share:.1%})"
    factor, word = (before / after, "smaller") if share < 1 else (share, "larger")
    return f"{factor:.2f}x {word} ({share:.1%})"


def format_speedup(before_s: float, after_s: float) -> str:
    """A time change (any unit, same for both): '1.06x faster', '1.06x slower', 'about as fast'."""
    if before_s <= 0 or after_s <= 0:
        raise ValueError(f"format_speedup needs positive times, got {before_s} and {after_s}")
    speedup = before_s / after_s
    if abs(speedup - 1) < SAME:
        return "about as fast"
    return f"{speedup:.2f}x faster" if speedup > 1 else f"{1 / speedup:.2f}x slower"


def model_label(model: str) -> str:
    """How plot titles name a model: a folder's last three path parts ("w2v2-12x12-ks/out/model", not a bare
    "model"), a hub id or `arch:` name as given."""
    parts = [p for p in str(model).replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts[-3:]) or str(model)
