"""Optimizers as ``(init, update)`` pairs with explicit state, call-compatible with optax.

Every optimizer is a :class:`GradientTransformation` (a NamedTuple of two pure functions), so it
works in code written for optax (``optax.chain``, ``optax.apply_updates``) and optax's
transformations work in fnet's loops; fnet never imports optax:

>>> import jax.numpy as jnp
>>> from fnet import optim
>>> params = {"dense1": {"W": jnp.array([[1.0, -2.0]]), "b": jnp.array([0.5, 0.5])}}
>>> grads = {"dense1": {"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([1.0, -1.0])}}
>>> opt = optim.sgd(learning_rate=0.25)
>>> state = opt.init(params)                           # params: any pytree of float arrays
>>> updates, state = opt.update(grads, state, params)  # grads: the same tree as params
>>> new_params = optim.apply_updates(params, updates)  # p + u, cast back to p's dtype
>>> print(new_params["dense1"]["W"], new_params["dense1"]["b"])
[[ 0.75 -2.5 ]] [0.25 0.75]
>>> print(float(optim.current_learning_rate(state)))   # the rate the last update used
0.25

Conventions (shared by all optimizers here):

- ``updates`` are ADDED to the parameters (``p += u``), as in optax; gradient descent is built in,
  so ``u = -lr * ...``.
- Equations follow the source material (cs231n assignment 2 ``optim.py``, "Deep Learning from
  Scratch" ``common/optimizer.py``), which keeps the learning rate INSIDE the momentum buffer
  (``v = mu*v - lr*g``). Each docstring states the equations and where optax/PyTorch differ.
  Where the source material teaches more than one form, the others are selectable:
  ``momentum(form="ema")`` (Andrew Ng's ``v = rho*v + (1-rho)*g; p -= lr*v``),
  ``adagrad``/``rmsprop(eps_in_sqrt=True)`` (``g / sqrt(h + eps)``) and ``adam(form="dlfs")``
  (Deep Learning from Scratch's Adam, which is NOT the standard one with another eps: see
  :func:`adam`). ``docs/source_errata.md`` lists the errors of widely copied versions that fnet
  does not reproduce, each with the test that pins it.
- Hyperparameters (learning rate, momentum, decays, eps, weight decay) may be Python floats, jax
  arrays or schedules (``step -> value``, see :mod:`fnet.schedules`), evaluated at ``count``, the
  number of updates done BEFORE this one (the first update sees ``count = 0``, as in optax). A
  hyperparameter passed as a traced array (an argument of a jitted or vmapped function that
  builds the optimizer) does not recompile when its value changes and can be vmapped::

      @jax.jit
      def step(lr, params, state, grads):        # lr: a jax scalar; one compilation for all values
          updates, state = fnet.optim.adam(lr).update(grads, state, params)
          return fnet.optim.apply_updates(params, updates), state

- State buffers (velocities, moments) are created in each parameter's dtype. The arithmetic of
  each leaf runs in ``promote_types(dtype, float32)`` (bfloat16/float16 leaves are computed in
  float32, then rounded once), and ``updates`` have the gradients' dtypes.
- Each optimizer's state records ``count`` (int32) and ``learning_rate`` (a scalar of the default
  float dtype: the rate used by the most recent update; after ``init``, the rate the first update
  will use); :func:`current_learning_rate` reads it from any fnet state, a :func:`chain` of states,
  or an ``optax.inject_hyperparams`` state.
- Hyperparameters given as Python numbers or concrete arrays are checked when the optimizer is
  built: all finite (no NaN, no inf), ``learning_rate >= 0`` (0 is allowed: it freezes the
  parameters), ``b1``, ``b2``, ``decay`` and the EMA form's ``momentum`` in [0, 1), the other
  momenta in [0, 1] (1 is undamped but well defined), ``eps > 0``, ``weight_decay >= 0``,
  ``max_norm > 0``; a value outside raises
  ``ValueError("adagrad: eps must be a finite number > 0, got -1e-07")``, a value that is not a
  real number ``TypeError``. Schedules and traced values are not known at construction and are
  not checked here (a schedule checks its own arguments when it is built).
- Mismatched trees raise ``ValueError`` naming the offending paths (``jax.tree_util.keystr``).

Parameters in fnet's networks are nested per layer, ``{"dense1": {"W", "b"}, "batchnorm1": {"gamma",
"beta"}, ..., "dense3": {"W", "b"}}``; a weight is a leaf whose innermost key starts with "W"
(:func:`fnet.modules.is_weight`). :func:`weights_only` is the mask that selects them, for weight
decay on weights only (as the source material does):

>>> opt = optim.chain(optim.add_weight_decay(0.5, mask=optim.weights_only), optim.sgd(0.25))
>>> updates, _ = opt.update(grads, opt.init(params), params)
>>> print(updates["dense1"]["W"], updates["dense1"]["b"])   # -0.25 * (g + 0.5 * W) on W only
[[-0.375 -0.25 ]] [-0.25  0.25]

Modules, split by role as optax's are: :mod:`~fnet.optim.base` (the interface, the builder that
lifts a per-leaf rule to pytrees, the checks, :func:`chain`, :func:`apply_updates`),
:mod:`~fnet.optim.transform` (the per-leaf rules, :func:`add_weight_decay`,
:func:`clip_by_global_norm`), :mod:`~fnet.optim.alias` (the named optimizers and their states).
"""

from fnet.optim.alias import (
    AdaGradState,
    AdamState,
    MomentumState,
    RMSPropState,
    SGDState,
    adagrad,
    adam,
    adamw,
    momentum,
    nesterov,
    rmsprop,
    sgd,
)
from fnet.optim.base import GradientTransformation, apply_updates, chain, current_learning_rate
from fnet.optim.transform import CountState, add_weight_decay, clip_by_global_norm, global_norm, weights_only

__all__ = [
    "AdaGradState", "AdamState", "CountState", "GradientTransformation", "MomentumState", "RMSPropState", "SGDState",
    "adagrad", "adam", "adamw", "add_weight_decay", "apply_updates", "chain", "clip_by_global_norm",
    "current_learning_rate", "global_norm", "momentum", "nesterov", "rmsprop", "sgd", "weights_only",
]
