"""P(no order over an interval) for the engaged -> disengaged -> churned chain of the trend process.

In: per-person rates and piecewise-constant segments (hazard and order-rate multipliers). Out:
probabilities. Shared by the churn oracle (synthetic/oracle.py) and the campaign truth of the
trend process (synthetic/trend.py), so both compute exactly the process the generator draws.
"""

from __future__ import annotations

import numpy as np


def _phi1(x: np.ndarray, y: np.ndarray, length: np.ndarray) -> np.ndarray:
    """(e^{xL} - e^{yL}) / (x - y), stable for x close to y (limit L e^{yL})."""
    d = x - y
    zero = d == 0
    return np.exp(y * length) * np.where(zero, length, np.expm1(d * length) / np.where(zero, 1.0, d))


def _chain_step(w: np.ndarray, m: np.ndarray, length: np.ndarray) -> np.ndarray:
    """exp(M L) w for upper-triangular 3x3 M (n, 3, 3), closed form by divided differences;
    rows where the first and last eigenvalues nearly coincide use scipy's expm."""
    a, b, c = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    m01, m02, m12 = m[:, 0, 1], m[:, 0, 2], m[:, 1, 2]
    ab, bc, ac = _phi1(a, b, length), _phi1(b, c, length), _phi1(a, c, length)
    near = np.abs(a - c) * length < 1e-6
    abc = (ab - bc) / np.where(near, 1.0, a - c)
    out = np.empty_like(w)
    out[:, 2] = np.exp(c * length) * w[:, 2]
    out[:, 1] = np.exp(b * length) * w[:, 1] + m12 * bc * w[:, 2]
    out[:, 0] = np.exp(a * length) * w[:, 0] + m01 * ab * w[:, 1] + (m02 * ac + m01 * m12 * abc) * w[:, 2]
    if near.any():
        from scipy.linalg import expm

        rows = np.flatnonzero(near)
        out[rows] = np.einsum("nij,nj->ni", expm(m[rows] * length[rows, None, None]), w[rows])
    return out


def p_no_order_chain(
    lam: np.ndarray,
    lam_d: np.ndarray,
    r: np.ndarray,
    h: np.ndarray,
    h_d: np.ndarray,
    rho: np.ndarray,
    state: np.ndarray,
    edges: np.ndarray,
    log_hazard_mult: np.ndarray,
    rate_mult: np.ndarray,
) -> np.ndarray:
    """P(no order on [edges[:, 0], edges[:, -1]]) for the engaged(0)/disengaged(1)/churned(2) chain.

    edges (n, P) sorted offsets in days; per segment j (n, P-1): hazards x exp(log_hazard_mult),
    order rates x rate_mult. Engaged: orders lam, disengages at rho, churns at h; disengaged:
    orders lam_d, churns at h_d; churned: orders r.
    """
    n = len(lam)
    w = np.ones((n, 3))
    for j in range(edges.shape[1] - 2, -1, -1):
        length = edges[:, j + 1] - edges[:, j]
        hm = np.exp(log_hazard_mult[:, j])
        k = rate_mult[:, j]
        m = np.zeros((n, 3, 3))
        m[:, 0, 0] = -(rho + h * hm + lam * k)
        m[:, 0, 1] = rho
        m[:, 0, 2] = h * hm
        m[:, 1, 1] = -(h_d * hm + lam_d * k)
        m[:, 1, 2] = h_d * hm
        m[:, 2, 2] = -r * k
        live = length > 0
        if live.any():
            w[live] = _chain_step(w[live], m[live], length[live])
    return w[np.arange(n), np.asarray(state, dtype=np.int64)]


__all__ = ["p_no_order_chain"]
