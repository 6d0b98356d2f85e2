import numpy as np
import pandas as pd

from cdp.training.monitoring import null_share, psi


def test_psi_flags_a_shift_and_passes_a_resample():
    rng = np.random.default_rng(0)
    train = pd.Series(rng.normal(50, 10, 5000))
    assert psi(train, pd.Series(rng.normal(50, 10, 5000))) < 0.05
    assert psi(train, pd.Series(rng.normal(65, 10, 5000))) > 0.2  # e.g. a category's prices up 30%


def test_psi_categorical_counts_unseen_categories():
    train = pd.Series(["a", "b"] * 500)
    assert psi(train, pd.Series(["a", "b"] * 500)) < 1e-6
    assert psi(train, pd.Series(["c"] * 1000)) > 0.2


def test_null_share():
    assert null_share(pd.Series([1.0, None, None, 4.0])) == 0.5
