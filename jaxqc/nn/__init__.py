"""Neural networks for molecules: DTNN, SchNet (flax, sharing layers.py) and Cormorant (e3nn-jax)."""

NETWORK_KINDS = ("schnet", "dtnn", "cormorant")  # the keys of model.NETWORKS (kept light for the CLI)
