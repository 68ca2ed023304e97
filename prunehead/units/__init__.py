"""Unit kinds: the things a plan removes (attention heads, feed-forward neurons), each knowing its sites,
how to gate and remove them and how the plan records them."""
