"""Hand-made perplexity grids with per-window losses, for the tests of the cross-model table and its sentences."""
import numpy as np
import pandas as pd


def window_grid(shifts: dict, n_windows: int, seed: int = 0, targets=(0.5, 0.7), noise: float = 0.0,
                method: str | None = None):
    """(runs, windows): uniform with NLL 3 + t + noise per window; each strategy = uniform's windows + its shift.

    ``noise`` > 0 adds independent N(0, noise) per window to every run; a strategy named ``"noisy"`` gets fresh
    N(0, 0.05) windows instead of a shift. ``method`` adds a method column to the windows table."""
    rng = np.random.default_rng(seed)
    base = {t: 3.0 + t + rng.normal(0, 0.05, n_windows) for t in targets}
    win, runs = [], []
    for strategy, shift in {"uniform": 0.0, **shifts}.items():
        for t in targets:
            nll = base[t] + (shift if strategy != "uniform" else 0.0)
            if noise:
                nll = nll + rng.normal(0, noise, n_windows)
            if strategy == "noisy":
                nll = base[t] + rng.normal(0, 0.05, n_windows)
            extra = {"method": method} if method else {}
            win += [dict(strategy=strategy, sparsity=t, **extra, window_index=i, nll=v) for i, v in enumerate(nll)]
            runs.append(dict(strategy=strategy, sparsity=t, perplexity=float(np.exp(nll.mean())), tokens=8176))
    return pd.DataFrame(runs), pd.DataFrame(win)
