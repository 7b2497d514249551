"""Tolerances for comparing the numbers of two programs that compute the same math.

Two programs that are equal in exact arithmetic (an epoch against a loop of steps, manual against
autodiff gradients, a vmapped trial against its own run, one device against eight, fnet against a
peer library) differ by rounding only: the compiler orders and fuses their sums differently, and
CPUs of other kinds (Xeon, EPYC) pick other instructions for the same program. The bounds below are
derived from the arithmetic, not measured on one CPU:

1. A sum of ``n`` terms, in any order, is exact to ``n * eps * sum |terms|`` (Higham, *Accuracy and
   Stability of Numerical Algorithms*, 2nd ed., section 4.2), so two orders differ by at most
   ``2 * n * eps`` times the magnitude of the terms. One training step chains such sums: the
   forward products, the backward products and the batch reduction of the weight gradients.
   ``terms`` is their total length along the longest chain (for an MLP d0-d1-...-dL on batches of
   B: ``d0 + ... + d(L-1)`` forward, ``d1 + ... + dL`` backward, ``B`` for dW).
2. The terms are of the magnitude of the compared values, up to the largest of them: an element
   far below the tree's largest (a small difference of large terms, a bias near 0) carries the
   large terms' absolute rounding. So the absolute floor scales with ``S = max |leaf|`` of the
   expected tree, as :mod:`fnet.gradcheck`'s scale floors do::

       |a - b| <= rtol * |b| + rtol * S,    rtol = 2 * terms * eps(dtype) * steps

   with ``steps`` the optimizer steps between the common start and the comparison (each step adds
   its own rounding; over a few steps the differences add rather than grow).
3. A leaf whose gradient is exactly 0 in exact arithmetic (a bias feeding batch norm: the
   normalization removes any per-feature shift) receives pure rounding noise
   ``|g| <= terms * eps * G``, with ``G`` the largest gradient of its neighbours. Adam's step
   ``lr * m / (sqrt(v) + eps_adam)`` turns it into a move of at most ``lr * |g| / eps_adam`` per
   step (and never more than about ``lr``): such leaves are compared against
   :func:`adam_noise_floor` instead, a floor that is still far below the ``lr`` per step a real
   gradient would move them by.
"""

from __future__ import annotations

import jax
import numpy as np


def _leaves(tree):
    return [np.asarray(v, np.float64) for v in jax.tree_util.tree_leaves(tree)]


def scale(tree) -> float:
    """``max |leaf|`` over every element of a pytree (0.0 for an empty one)."""
    return max((float(np.max(np.abs(v))) for v in _leaves(tree) if v.size), default=0.0)


def rounding_rtol(dtype, *, terms: int, steps: int = 1) -> float:
    """``2 * terms * eps(dtype) * steps``: how far two orders of the same sums may drift (item 2)."""
    return 2 * terms * float(np.finfo(dtype).eps) * steps


def adam_noise_floor(*, lr: float, grad_scale: float, dtype, terms: int, steps: int, eps_adam: float = 1e-8) -> float:
    """Largest difference of two programs on a leaf whose gradient is 0 in exact arithmetic,
    after ``steps`` Adam steps (item 3): ``2 * steps * lr * min(1, terms * eps * G / eps_adam)``."""
    noise = terms * float(np.finfo(dtype).eps) * grad_scale
    return 2 * steps * lr * min(1.0, noise / eps_adam)


def assert_trees_close(actual, expected, *, dtype, terms: int, steps: int = 1, noise_leaves=(), noise_floor=0.0):
    """Assert two pytrees agree to the rounding of two programs (see the module docstring).

    Args:
      actual, expected: pytrees of the same structure (arrays or scalars).
      dtype: the precision the programs computed in (float32 or float64).
      terms: the length of the longest chain of sums of one step (item 1).
      steps: optimizer steps between the common start and the comparison.
      noise_leaves: path fragments (as :func:`jax.tree_util.keystr` writes them, e.g.
        ``"['dense1']['b']"``) of leaves whose gradient is 0 in exact arithmetic; they are compared
        absolutely against ``noise_floor`` (from :func:`adam_noise_floor`).
    """
    pa, ta = jax.tree_util.tree_flatten_with_path(actual)
    pb, tb = jax.tree_util.tree_flatten_with_path(expected)
    assert ta == tb, f"the trees differ: {ta} vs {tb}"
    rtol = rounding_rtol(dtype, terms=terms, steps=steps)
    atol = rtol * scale(expected)
    for (path, a), (_, b) in zip(pa, pb):
        name = jax.tree_util.keystr(path)
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if any(fragment in name for fragment in noise_leaves):
            np.testing.assert_allclose(a, b, rtol=0, atol=max(atol, noise_floor), err_msg=f"{name} (rounding noise)")
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
