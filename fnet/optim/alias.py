"""The named optimizers: SGD, momentum (two forms), Nesterov, AdaGrad, RMSProp, Adam (two forms)
and AdamW, each a rule of :mod:`fnet.optim.transform` lifted by
:func:`fnet.optim.base.transformation`, with its state record and its equations, defaults and
differences from optax and PyTorch documented here.

Each named optimizer is ONE rule applied in one pass over the leaves, not a chain of
transformations as optax's ``alias.py`` builds them: the learning rate sits inside the source
material's formulas (``v = mu*v - lr*g``, ``-lr * g / root(s)``), so a separate scaling stage would
round differently, and the state stays one record (``AdamState``) rather than a tuple of stages.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from fnet.optim import transform
from fnet.optim.base import GradientTransformation, check_choice, transformation


class SGDState(NamedTuple):
    """State of :func:`sgd`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""


class MomentumState(NamedTuple):
    """State of :func:`momentum` (both forms) and :func:`nesterov`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    velocity: Any
    """Pytree like params: ``v``, starting at 0. In the standard form (and :func:`nesterov`), the
    last update direction INCLUDING the learning rate (cs231n's ``config['velocity']``); equals
    ``-lr * trace`` of optax's ``sgd(momentum=...)``. In the EMA form (``momentum(form="ema")``),
    the moving average of the gradients, WITHOUT the rate (optax ``ema(debias=False)``'s ``ema``)."""


class AdaGradState(NamedTuple):
    """State of :func:`adagrad` (either eps placement)."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    sum_of_squares: Any
    """Pytree like params: ``h``, the running sum of squared gradients. Starts at 0."""


class RMSPropState(NamedTuple):
    """State of :func:`rmsprop` (either eps placement)."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    mean_square: Any
    """Pytree like params: ``h``, the exponential moving average of squared gradients (cs231n's
    ``config['cache']``). Starts at 0."""


class AdamState(NamedTuple):
    """State of :func:`adam` (both forms) and :func:`adamw`."""

    count: jax.Array
    """int32 scalar: number of updates done so far (Adam's ``t`` after the update)."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    mu: Any
    """Pytree like params: ``m``, the first moment (EMA of gradients), not bias-corrected. Starts at 0."""
    nu: Any
    """Pytree like params: ``v``, the second moment (EMA of squared gradients), not bias-corrected.
    Starts at 0."""


# ----------------------------------------------------------------------------- optimizers


def sgd(learning_rate=1e-2) -> GradientTransformation:
    """Vanilla stochastic gradient descent::

        u = -lr * g                                   (p += u)

    Default ``learning_rate=1e-2`` (cs231n, Deep Learning from Scratch). optax's ``sgd`` has no
    default rate; PyTorch's ``SGD`` default is 1e-3. State: :class:`SGDState`.
    """
    return transformation("sgd", SGDState, transform.sgd_rule, {"learning_rate": learning_rate})


_MOMENTUM_FORMS = {"standard": transform.momentum_rule, "ema": transform.ema_momentum_rule}


def momentum(learning_rate=1e-2, momentum=0.9, form="standard") -> GradientTransformation:
    """SGD with (heavy-ball) momentum, in the source material's form or as a moving average.

    ``form="standard"`` (cs231n's ``sgd_momentum``, Deep Learning from Scratch's ``Momentum``)
    keeps the learning rate INSIDE the velocity::

        v = mu * v - lr * g
        u = v                                         (p += v)

    ``form="ema"`` (Andrew Ng's deeplearning.ai course) keeps an exponential moving average of
    the gradients, ``rho`` being the ``momentum`` argument, and scales it by the rate::

        v = rho * v + (1 - rho) * g
        u = -lr * v                                   (p -= lr * v)

    In both, ``v`` starts at 0 (the EMA is not bias-corrected, as in the course). The two forms
    are one method at different rates: at a constant rate, ``form="ema"`` with ``(lr, rho)``
    takes exactly the steps of ``form="standard"`` with ``(lr * (1 - rho), rho)``, so at the same
    ``lr`` and ``rho = 0.9`` its steps are 10x smaller; with a changing rate they differ, as the
    EMA form applies today's rate to the whole history. The form is a keyword rather than a
    second function so that one name covers the method and ``MomentumState`` serves both.

    Defaults ``learning_rate=1e-2``, ``momentum=0.9`` in both forms. ``momentum`` may be in
    [0, 1] in the standard form (1 is undamped: ``v`` sums all past steps) and in [0, 1) in the
    EMA form (``rho = 1`` would keep ``v`` at 0).

    optax (``sgd(lr, momentum=mu)``) and PyTorch (``SGD(momentum=mu)``, dampening 0) keep the rate
    outside the buffer: ``b = mu * b + g; p -= lr * b``. At a constant rate that equals the
    standard form (``v = -lr * b``); with a changing rate they differ, because here past steps
    keep the rate they were taken with. The EMA form is optax's
    ``chain(ema(rho, debias=False), scale(-lr))``; PyTorch's ``SGD(momentum=rho, dampening=rho)``
    differs from it at the first step only (its buffer starts at ``g``, not ``(1 - rho) * g``).

    Raises ``ValueError`` for an unknown ``form`` or a concrete hyperparameter out of range.
    State: :class:`MomentumState`.
    """
    check_choice("momentum", "form", form, tuple(_MOMENTUM_FORMS))
    bounds = {"momentum": "in [0, 1)"} if form == "ema" else None
    return transformation(
        "momentum", MomentumState, _MOMENTUM_FORMS[form], {"learning_rate": learning_rate, "momentum": momentum},
        bounds=bounds,
    )


def nesterov(learning_rate=1e-2, momentum=0.9) -> GradientTransformation:
    """Nesterov momentum in Bengio et al.'s reformulation (cs231n's "Nesterov momentum" notes),
    with ``v_old`` the velocity BEFORE this step::

        u     = mu**2 * v_old - (1 + mu) * lr * g      (p += u)
        v_new = mu * v_old - lr * g

    equivalently ``u = -mu * v_old + (1 + mu) * v_new = mu * v_new - lr * g``; fnet computes the
    last form (``v_new`` first), which needs no copy of ``v_old`` when the state buffers are
    donated (with the old-v form XLA copies ``v`` so that it can overwrite it in place; that made
    the update 2.5x slower on CPU). Defaults ``learning_rate=1e-2``, ``momentum=0.9``.

    A widely copied variant (e.g. Deep Learning from Scratch's ``Nesterov``) updates ``v`` first
    and then uses the NEW ``v`` in the ``mu**2`` term (``u = mu**2 * v_new - (1 + mu) * lr * g``);
    that is not Nesterov's method and is not what fnet computes (see ``docs/source_errata.md``).
    At a constant rate this form equals optax's ``sgd(lr, momentum=mu, nesterov=True)`` and
    PyTorch's ``SGD(nesterov=True)`` (``b = mu * b + g; p -= lr * (g + mu * b)``), with
    ``v = -lr * b``. State: :class:`MomentumState`.
    """
    hparams = {"learning_rate": learning_rate, "momentum": momentum}
    return transformation("nesterov", MomentumState, transform.nesterov_rule, hparams)


def adagrad(learning_rate=1e-2, eps=1e-7, eps_in_sqrt=False) -> GradientTransformation:
    """AdaGrad, with eps outside the root (Deep Learning from Scratch's ``AdaGrad``) or inside::

        h = h + g * g                                  (h starts at 0)
        u = -lr * g / (sqrt(h) + eps)                  (eps_in_sqrt=False, the default)
        u = -lr * g / sqrt(h + eps)                    (eps_in_sqrt=True)

    Defaults ``learning_rate=1e-2``, ``eps=1e-7`` (the source's, and optax's). Inside the root,
    eps acts like ``sqrt(eps)`` outside it (3.2e-4 for 1e-7): gradients much smaller than that
    take steps much smaller than ``lr``, where the default form gives them nearly ``lr``.

    ``eps_in_sqrt=True`` is optax's ``adagrad(lr, initial_accumulator_value=0.0, eps=eps)``;
    optax's default starts ``h`` at 0.1. PyTorch's ``Adagrad`` starts at 0 with eps outside,
    eps=1e-10. ``eps_in_sqrt`` must be a Python bool (it selects the formula when tracing).
    State: :class:`AdaGradState`.
    """
    check_choice("adagrad", "eps_in_sqrt", eps_in_sqrt, (False, True))
    hparams = {"learning_rate": learning_rate, "eps": eps}
    return transformation("adagrad", AdaGradState, transform.adagrad_rule(eps_in_sqrt), hparams)


def rmsprop(learning_rate=1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False) -> GradientTransformation:
    """RMSProp, with eps outside the root (cs231n's ``rmsprop``) or inside::

        h = d * h + (1 - d) * g * g                    (h starts at 0)
        u = -lr * g / (sqrt(h) + eps)                  (eps_in_sqrt=False, the default)
        u = -lr * g / sqrt(h + eps)                    (eps_in_sqrt=True)

    Defaults ``learning_rate=1e-2``, ``decay=0.99``, ``eps=1e-8`` (cs231n; Deep Learning from
    Scratch uses eps=1e-7 outside the root). PyTorch's ``RMSprop`` matches the default form
    (alpha=0.99, eps outside). ``eps_in_sqrt=True`` is optax's ``rmsprop(lr, decay, eps)``
    (optax's default placement; its default decay is 0.9). Inside the root, eps acts like
    ``sqrt(eps)`` outside it (1e-4 for 1e-8). ``eps_in_sqrt`` must be a Python bool.
    State: :class:`RMSPropState`.
    """
    check_choice("rmsprop", "eps_in_sqrt", eps_in_sqrt, (False, True))
    hparams = {"learning_rate": learning_rate, "decay": decay, "eps": eps}
    return transformation("rmsprop", RMSPropState, transform.rmsprop_rule(eps_in_sqrt), hparams)


# Each form's rule and default eps.
_ADAM_FORMS = {"standard": (transform.adam_rule, 1e-8), "dlfs": (transform.adam_dlfs_rule, 1e-7)}


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=None, form="standard") -> GradientTransformation:
    """Adam, in the standard form or Deep Learning from Scratch's; in both the step ``t`` is
    incremented BEFORE use (``t = count + 1``, so the first update has ``t = 1``).

    ``form="standard"``: Kingma & Ba's Algorithm 1, as cs231n's ``adam``::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t);  v_hat = v / (1 - b2**t)
        u = -lr * m_hat / (sqrt(v_hat) + eps)          (eps against the CORRECTED sqrt(v_hat))

    ``form="dlfs"``: Deep Learning from Scratch's ``Adam`` (``common/optimizer.py``), which folds
    both corrections into the rate (the reordering in Section 2 of Kingma & Ba, with its
    "epsilon hat")::

        lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (1 - b1) * (g - m)                     (= b1 * m + (1 - b1) * g)
        v = v + (1 - b2) * (g * g - v)                 (= b2 * v + (1 - b2) * g * g)
        u = -lr_t * m / (sqrt(v) + eps)                (eps against the UNcorrected sqrt(v))

    The moments are the same; the forms differ in what eps is added to. Dividing the dlfs step's
    numerator and denominator by ``sqrt(1 - b2**t)``::

        u_dlfs = -lr * m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2**t))

    so the dlfs form is the standard one with eps replaced by ``eps_t = eps / sqrt(1 - b2**t)``,
    which is LARGER than eps and shrinks to it as ``t`` grows: with ``b2 = 0.999``, 31.6 eps at
    ``t = 1``, 10 eps at ``t = 10``, 3.2 eps at ``t = 100``, 1.26 eps at ``t = 1000``. Where
    gradients are large against eps the two agree (relative difference about
    ``(eps_t - eps) / |g|``); for small gradients the dlfs steps are smaller early on: with
    eps=1e-7 and ``|g|`` near 1e-4, about 3% at ``t = 1`` and 1% at ``t = 10``; near 1e-6, a
    factor of about 4 at ``t = 1``. The two are not one algorithm with different eps defaults.

    Args:
      learning_rate, b1, b2: defaults 1e-3, 0.9, 0.999 (cs231n, Deep Learning from Scratch,
        optax, PyTorch).
      eps: None (default) picks the form's: 1e-8 for "standard" (cs231n, optax, PyTorch), 1e-7
        for "dlfs" (the book's, which it writes inline).
      form: "standard" or "dlfs".

    The standard form is optax's ``adam`` (with ``eps_root=0``) and PyTorch's ``Adam``. Raises
    ``ValueError`` for an unknown ``form`` or a concrete hyperparameter out of range.
    State: :class:`AdamState` (``mu`` and ``nu`` are the uncorrected ``m`` and ``v`` in both forms).
    """
    check_choice("adam", "form", form, tuple(_ADAM_FORMS))
    rule, default_eps = _ADAM_FORMS[form]
    hparams = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": default_eps if eps is None else eps}
    return transformation("adam", AdamState, rule, hparams)


def adamw(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, mask=None) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter)::

        m, v, m_hat, v_hat as in :func:`adam`'s standard form
        u = -lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)

    The decay term bypasses the moments (unlike L2 regularization, :func:`add_weight_decay`
    before :func:`adam`) and is scaled by the (scheduled) learning rate, as in optax and PyTorch
    (PyTorch's ``p *= 1 - lr * wd`` is the same update). ``update`` needs ``params``.

    Defaults as :func:`adam` plus ``weight_decay=1e-2`` (PyTorch's default; optax's is 1e-4).

    Args:
      mask: None (decay every leaf), a pytree of Python bools like params, or a callable
        ``params -> such a pytree``; only leaves marked True are decayed. Use
        :func:`weights_only` to decay fnet's "W" weights and not biases or norm parameters.

    State: :class:`AdamState`.
    """
    hparams = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}
    return transformation("adamw", AdamState, transform.adamw_rule, hparams, needs_params=True, mask=mask)
