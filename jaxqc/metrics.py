"""Error metrics shared by every model's evaluation."""
import numpy as np


def mae_rmse(pred, true) -> dict:
    """{"mae", "rmse"} of pred - true over all entries (per component for forces)."""
    err = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}
