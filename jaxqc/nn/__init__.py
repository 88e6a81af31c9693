"""Neural networks for molecules: DTNN and SchNet (flax), sharing layers.py."""
