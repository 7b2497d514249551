"""What the language-model step benchmarks (rnn_step, transformer_step) share beyond
:mod:`benchmarks._common`: windows of a text as stacked batches, fnet's training step over them
(one compiled call per step, or all steps in one ``lax.scan``) and PyTorch's token-model loop.
Every implementation returns an :class:`~benchmarks._common.Impl`, already warmed up."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from fnet import data, optim


def text_batches(ds, batch: int, steps: int, n: int, seed: int = 0):
    """``n`` batches of random windows of ``ds``'s training text (:func:`fnet.data.random_windows`):
    ids and next-character targets, each a NumPy array (n, B, T = ``steps``) of int32."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    ids, y = zip(*(data.random_windows(k, jnp.asarray(ds.train), batch, steps) for k in keys))
    return np.stack(ids), np.stack(y)


def fnet_steps(name: str, loss_and_grad: Callable, opt, params0, ids, y, *, scanned: bool) -> _common.Impl:
    """fnet's training step as an :class:`~benchmarks._common.Impl`: ``loss_and_grad(params, x,
    y) -> (loss, grads)``, then ``opt`` (an fnet or optax transformation) and
    :func:`fnet.optim.apply_updates`, over the stacked batches ``ids``, ``y`` (n, B, ...).

    ``scanned=False``: one jit-compiled call per step; True: all n steps in one compiled
    ``lax.scan`` (time / n per step). Both donate the parameters and the optimizer state, and are
    compiled ahead of time (timed, with XLA's memory analysis)."""
    def step(params, opt_state, batch):
        loss, grads = loss_and_grad(params, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss

    def epoch(params, opt_state, ids, y):
        def body(carry, batch):
            params, opt_state, loss = step(*carry, batch)
            return (params, opt_state), loss

        (params, opt_state), step_losses = jax.lax.scan(body, (params, opt_state), (ids, y))
        return params, opt_state, step_losses

    carry = [jax.tree_util.tree_map(jnp.copy, params0), None]
    carry[1] = opt.init(carry[0])
    ids, y = jnp.asarray(ids), jnp.asarray(y)
    fn, args = (epoch, (ids, y)) if scanned else (step, ((ids[0], y[0]),))
    compile_s, compiled = _common.timed(lambda: jax.jit(fn, donate_argnums=(0, 1)).lower(*carry, *args).compile())
    impl = _common.Impl(name, None, ids.shape[0], compile_s=compile_s, memory=_common.compiled_memory(compiled))

    def rep():
        t0 = time.perf_counter()
        if scanned:
            p, o, out = compiled(*carry, ids, y)
        else:
            (p, o), out = carry, []
            for batch in zip(ids, y):
                p, o, loss = compiled(p, o, batch)
                out.append(loss)
        jax.block_until_ready((p, o, out))
        dt = time.perf_counter() - t0
        carry[:] = [p, o]
        impl.losses.extend(np.asarray(jnp.stack(out) if isinstance(out, list) else out).tolist())
        return dt

    impl.rep = rep
    return _common.first_call(impl)


def torch_loop(name: str, model, ids, y, *, device: str, compile_model: bool, make_optimizer: Callable,
               clip: float) -> _common.Impl:
    """A PyTorch token model ``model`` (ids (B, T) -> scores (B, T, V)) trained as PyTorch's
    examples do: ``nn.CrossEntropyLoss`` over the B*T tokens, ``clip_grad_norm_(clip)``, the
    optimizer ``make_optimizer(parameters)``, eager or under ``torch.compile``, over the NumPy
    batches ``ids``, ``y`` (n, B, T), as a :func:`~benchmarks._common.python_loop`."""
    import torch
    from torch import nn

    model = model.to(device)
    opt = make_optimizer(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    forward = torch.compile(model) if compile_model else model
    batches = [(torch.from_numpy(a).long().to(device), torch.from_numpy(b).long().to(device)) for a, b in zip(ids, y)]

    def step(x, t):
        opt.zero_grad(set_to_none=True)
        scores = forward(x)
        loss = loss_fn(scores.reshape(-1, scores.shape[-1]), t.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.detach()

    return _common.python_loop(name, step, batches, torch.cuda.synchronize if device == "cuda" else (lambda: None))
