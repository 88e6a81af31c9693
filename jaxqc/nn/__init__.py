"""Neural networks for molecules: DTNN, SchNet (flax, sharing layers.py) and Cormorant (e3nn-jax);
registered as model families in jaxqc/models/."""
