"""Training infrastructure shared by every network: optax loop, checkpoints, logs, device sharding."""
