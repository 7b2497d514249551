"""Training a character language model by steps: :func:`fit_lm`, and its validation loss.

A language model (:func:`fnet.models.char_lm`) trains on random windows of a long text
(:func:`fnet.data.random_windows`, nanoGPT's batches) for a number of optimizer STEPS, the natural
unit when there are no epochs: one pass over tiny-shakespeare's 1M characters in windows of 128
is ~245 batches of 32, and a window starts anywhere. The steps run in compiled chunks of
``eval_every`` steps (a ``lax.scan`` that draws each batch inside the program), each followed by
a cheap validation estimate; :func:`validation_loss` is the full one, at the end.

Validation loss, everywhere fnet prints it for a language model, is the mean cross-entropy in
nats per character (natural log; bits per character = nats / ln 2) of the next-character
predictions over :data:`VAL_WINDOWS` windows of the training window length drawn from the
validation text (the last 10% of tiny-shakespeare) with a FIXED key (:func:`validation_windows`),
so runs of the same window length are scored on the same characters. Every window starts from a
zero recurrent state, as in training.

Randomness is a pure function of the seed, as in :func:`fnet.fit`: ``init_key, train_key =
split(PRNGKey(seed))``, ``data_key, dropout_key = split(train_key)`` and step ``s`` (0-based)
draws its batch with ``fold_in(data_key, s)`` and its dropout with ``fold_in(dropout_key, s)``.
A run resumed from the checkpoint written after step ``k`` therefore continues bit for bit as if
it had never stopped.

>>> import fnet
>>> text = fnet.data.load_text("shakespeare")
>>> net = fnet.char_lm(text.vocab_size, embed=8, hidden=16, context=32)
>>> result = fnet.fit_lm(net, fnet.optim.adam(3e-3), text, steps=40, batch_size=8, eval_every=20,
...                      eval_windows=16, progress=False)
>>> result.history["step"], result.history["val_loss"][1] < result.history["val_loss"][0]
([20, 40], True)
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, checkpoint, evaluation, history, limits, train, xla_options
from fnet.data.text import TextDataset, random_windows
from fnet.nets import Net, Variables

#: The per-evaluation lists of :attr:`LMResult.history` (and of a run folder's history.json).
HISTORY_KEYS = ("step", "train_loss", "val_loss", "lr", "time", "chars_per_s")
#: Windows of the full validation loss (:func:`validation_loss`): at least 200 random windows.
VAL_WINDOWS = 512
#: Windows of the cheap estimate after every ``eval_every`` steps of :func:`fit_lm`.
CHEAP_VAL_WINDOWS = 128
#: The fixed key of the validation windows (the same for every run and seed).
VAL_SEED = 1234
_EVAL_BATCH = 64
LN2 = math.log(2.0)


def bits(nats: float) -> float:
    """Nats per character as bits per character (``nats / ln 2``)."""
    return nats / LN2


def validation_windows(ids, length: int, count: int = VAL_WINDOWS) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows of ``length`` ids of the validation text ``ids`` and their next ids, drawn
    with the fixed key ``PRNGKey(VAL_SEED)`` (:func:`fnet.data.random_windows`): x, y int32 of
    shape (count, length), the same for every call with the same arguments."""
    x, y = random_windows(jax.random.PRNGKey(VAL_SEED), ids, count, length)
    return np.asarray(x), np.asarray(y)


def validation_loss(net: Net, variables, ids, *, windows: int = VAL_WINDOWS) -> float:
    """The validation loss of a language model in nats per character: the mean cross-entropy of
    its next-character predictions (eval mode, no dropout) over ``windows`` fixed windows
    (:func:`validation_windows`) of the network's context length from ``ids`` (shape (N,),
    e.g. :attr:`TextDataset.val`)."""
    context = _check_lm("validation_loss", net)
    windows = _checks.integer("validation_loss", "windows", windows, minimum=1)
    params, state = variables if isinstance(variables, Variables) else (variables, {})
    x, y = validation_windows(ids, context, windows)
    return evaluation.evaluate(net, params, state, x, y, batch_size=min(_EVAL_BATCH, windows))["loss"]


class LMResult(NamedTuple):
    """What :func:`fit_lm` returns.

    Fields:
      params, state, opt_state: after the last step.
      best_params, best_state: those with the lowest cheap validation estimate.
      best_step: that step's number (1-based steps done).
      history: per-evaluation lists (:data:`HISTORY_KEYS`): "step" (steps done), "train_loss"
        (mean train-mode loss of the steps since the last evaluation), "val_loss" (the cheap
        estimate, nats/char), "lr", "time" (seconds of training, compile and evaluation
        included, counted on from the checkpoint's for a resumed run), "chars_per_s" (training
        characters per second of the chunk).
      steps_run: the steps this call trained (0 for a resumed run that had finished).
    """

    params: dict
    state: dict
    opt_state: object
    best_params: dict
    best_state: dict
    best_step: int
    history: dict
    steps_run: int

    @property
    def variables(self) -> Variables:
        return Variables(self.params, self.state)

    @property
    def best_variables(self) -> Variables:
        return Variables(self.best_params, self.best_state)


def _check_lm(fn: str, net) -> int:
    """The context length T of a language model: a :class:`Net` of token input (T,) whose loss is
    the temporal softmax cross-entropy (:func:`fnet.models.char_lm`, or a composition of your own)."""
    ok = isinstance(net, Net) and net.input_dtype is not None and len(net.input_shape) == 1 \
        and net.loss_name == "temporal_softmax_cross_entropy"
    if not ok:
        got = (f"a network of input {net.input_shape} ({net.input_dtype or 'float'}) and loss {net.loss_name!r}"
               if isinstance(net, Net) else type(net).__name__)
        raise TypeError(f"{fn}: net must be a language model: token ids (T,) in, loss 'temporal_softmax_cross_entropy' "
                        f"(e.g. fnet.models.char_lm), got {got}")
    return net.input_shape[0]


@functools.lru_cache(maxsize=16)
def _compiled_chunk(net: Net, opt, batch_size: int, steps: int, grad: str) -> Callable:
    """``(params, state, opt_state, ids, data_key, dropout_key, start) -> (params, state,
    opt_state, losses (steps,))``: steps ``start ... start + steps - 1`` in one compiled scan."""
    body = train.step_body(net, opt, grad, "fit_lm")
    length = net.input_shape[0]

    def chunk(params, state, opt_state, ids, data_key, dropout_key, start):
        def one(carry, i):
            step = start + i
            batch = random_windows(jax.random.fold_in(data_key, step), ids, batch_size, length)
            *carry, loss = body(*carry, batch, jax.random.fold_in(dropout_key, step))
            return tuple(carry), loss

        carry, losses = jax.lax.scan(one, (params, state, opt_state), jnp.arange(steps, dtype=jnp.uint32))
        return (*carry, losses)

    return jax.jit(chunk, donate_argnums=(0, 1, 2))


def _check_fit_lm_args(fn, net, text, steps, batch_size, eval_every, eval_windows, seed, resume, checkpoint_dir):
    context = _check_lm(fn, net)
    if not isinstance(text, TextDataset):
        raise TypeError(f"{fn}: text must be a fnet.data.TextDataset (fnet.data.load_text), got {type(text).__name__}")
    if text.vocab_size != net.vocab_size:
        raise ValueError(f"{fn}: the network's vocabulary has {net.vocab_size} tokens but the text "
                         f"{text.name!r} has {text.vocab_size} characters; build it with vocab_size={text.vocab_size}")
    steps = _checks.integer(fn, "steps", steps, minimum=1)
    limits.check_steps(1, steps, option=f"{fn}: steps")
    for part, ids in (("training", text.train), ("validation", text.val)):
        if len(ids) <= context:
            raise ValueError(f"{fn}: the {part} text has {len(ids)} characters, too few for windows of the network's "
                             f"context {context} (a window of T needs T + 1)")
    sizes = {k: _checks.integer(fn, k, v, minimum=1) for k, v in
             (("batch_size", batch_size), ("eval_every", eval_every), ("eval_windows", eval_windows))}
    seed = limits.check_seed(f"{fn}: seed", _checks.integer(fn, "seed", seed))
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs a checkpoint_dir")
    return steps, sizes["batch_size"], sizes["eval_every"], sizes["eval_windows"], seed


def save_checkpoint(path, carry, best: dict, progress: dict) -> None:
    """Write a language model's checkpoint: ``params``, ``state``, ``opt_state`` and the best
    ``best_params``/``best_state`` (the layout of :func:`fnet.fit`'s), and ``progress`` ("step",
    "best_step", "best_val_loss", "history") in the metadata, atomically."""
    checkpoint.save(path, history.checkpoint_arrays(*carry, best), metadata=progress)


def _load_checkpoint(fn, path, carry):
    tree, meta = checkpoint.load(path, like=history.checkpoint_like(*carry)), checkpoint.load_metadata(path)
    done = meta.get("step")
    if isinstance(done, bool) or not isinstance(done, int) or not isinstance(meta.get("history"), dict) \
            or meta["history"].get("step", [None])[-1:] != [done]:
        raise ValueError(f"{fn}: {path} holds no valid record of the steps done (step, history); it was edited or "
                         "damaged")
    return (*history.split_arrays(tree), meta)


def _start(fn, net, opt, seed, ckpt_path):
    """``(data_key, dropout_key, carry, best, progress)``: initialised from the seed, or resumed."""
    seed_key = jax.random.PRNGKey(seed)
    init_key, train_key = xla_options.compiled_init(train.split_key, train.shape_spec(seed_key))(seed_key)
    params, state = xla_options.compiled_init(net.init, train.shape_spec(init_key))(init_key)
    carry = (params, state, jax.jit(opt.init)(params))
    if ckpt_path is not None and os.path.exists(ckpt_path):
        carry, best, progress = _load_checkpoint(fn, ckpt_path, carry)
    else:  # the best copy is a copy: the chunks donate the carry's buffers
        best = {"params": jax.tree_util.tree_map(jnp.copy, params), "state": jax.tree_util.tree_map(jnp.copy, state)}
        progress = {"step": 0, "best_step": 0, "best_val_loss": math.inf, "history": {k: [] for k in HISTORY_KEYS}}
    for name, tree in zip(("params", "state", "opt_state"), carry):
        _checks.finite_tree(fn, name, tree)
    data_key, dropout_key = xla_options.compiled_init(train.split_key, train.shape_spec(train_key))(train_key)
    return data_key, dropout_key, carry, best, progress


def progress_line(r: dict, steps: int, width: int = 20) -> str:
    """One evaluation's progress line from its history record ``r``: the training loss (the mean
    of the steps since the last line, train mode) and the cheap validation estimate, in nats and
    in bits per character:

    >>> r = {"step": 500, "train_loss": 1.61234, "val_loss": 1.70821, "lr": 1.5e-3, "time": 95.2,
    ...      "chars_per_s": 20480.4}
    >>> progress_line(r, steps=2000)
    '[#####---------------] step  500/2000  train 1.6123  val 1.7082 nats/char (2.326 / 2.464 bits/char)  lr 1.50e-03  20,480 chars/s  1m35s'
    """
    bar = "#" * round(width * r["step"] / steps)
    lr = "" if math.isnan(r["lr"]) else f"  lr {r['lr']:.2e}"
    minutes, seconds = divmod(int(r["time"]), 60)
    return (f"[{bar:-<{width}}] step {r['step']:>{len(str(steps))}}/{steps}  train {r['train_loss']:.4f}  val "
            f"{r['val_loss']:.4f} nats/char ({bits(r['train_loss']):.3f} / {bits(r['val_loss']):.3f} bits/char){lr}  "
            f"{r['chars_per_s']:,.0f} chars/s  {minutes}m{seconds:02d}s")


def _check_losses(fn, losses, start: int, progress: dict, checkpoint_dir) -> None:
    """Raise :class:`fnet.train.TrainingDiverged` at the first non-finite step loss."""
    if np.all(np.isfinite(losses)):
        return
    bad = int(np.argmax(~np.isfinite(losses)))
    kept = (f"; the checkpoint of step {progress['step']} in {checkpoint_dir} is kept"
            if checkpoint_dir and progress["step"] else "")
    raise train.TrainingDiverged(f"{fn}: the training loss became {losses[bad]} at step {start + bad + 1}{kept}; "
                                 "try a smaller learning rate or gradient clipping", progress["history"])


def fit_lm(net: Net, opt, text: TextDataset, *, steps: int, batch_size: int = 32, seed: int = 0,
           grad: str = "manual", eval_every: int = 100, eval_windows: int = CHEAP_VAL_WINDOWS,
           checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True,
           print_fn: Callable[[str], None] = print) -> LMResult:
    """Train a language model for ``steps`` optimizer steps on random windows of ``text``.

    Each step draws ``batch_size`` windows of the network's context length T from
    ``text.train`` (:func:`fnet.data.random_windows`: inputs x (B, T), targets y = x shifted by
    one) and applies one update of ``opt``; the loss is the network's (mean over the B*T
    tokens, nats). Every ``eval_every`` steps (and after the last) the cheap validation
    estimate is taken on ``eval_windows`` fixed windows of ``text.val``, a history record and a
    progress line are written, the best parameters so far kept, and the checkpoint rewritten.

    Args:
      net: a language model with ``net.vocab_size == text.vocab_size``: token ids (T,) in, the
        temporal softmax cross-entropy as its loss (:func:`fnet.models.char_lm`, or
        ``fnet.network(serial(embedding(V, E), lstm(H), temporal_dense(V)), (T,),
        loss="temporal_softmax_cross_entropy")``).
      opt: an ``(init, update)`` optimizer (e.g. ``chain(clip_by_global_norm(1), adam(lr))``).
      text: a :class:`fnet.data.TextDataset` (:func:`fnet.data.load_text`).
      steps: the run's total number of steps (a resumed run continues up to it).
      batch_size, eval_every, eval_windows: positive ints.
      seed: all randomness (init, batches, dropout) derives from ``PRNGKey(seed)``.
      grad: "manual" (hand-written BPTT) or "autodiff" (``jax.grad``).
      checkpoint_dir: if given, ``checkpoint.safetensors`` there is rewritten atomically after
        every evaluation; resume: continue from it (bitwise the uninterrupted run).
      progress, print_fn: one progress line per evaluation (:func:`progress_line`).

    Returns:
      An :class:`LMResult`.

    Raises:
      fnet.train.TrainingDiverged: a NaN or infinite training loss (the last checkpoint is kept).
      TypeError/ValueError: a network that is not a language model, a vocabulary that differs
        from the text's, bad sizes, before any training.
    """
    fn = "fit_lm"
    steps, batch_size, eval_every, eval_windows, seed = _check_fit_lm_args(
        fn, net, text, steps, batch_size, eval_every, eval_windows, seed, resume, checkpoint_dir)
    ckpt_path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), history.CHECKPOINT_NAME)
    data_key, dropout_key, carry, best, run = _start(fn, net, opt, seed, ckpt_path if resume else None)
    ids = jnp.asarray(text.train)
    val_x, val_y = validation_windows(text.val, net.input_shape[0], eval_windows)
    # time: seconds of training (compile and evaluation included), summed over resumed calls
    t0, start_step = time.perf_counter() - (run["history"]["time"] or [0.0])[-1], run["step"]
    while run["step"] < steps:
        start, n = run["step"], min(eval_every, steps - run["step"])
        t_chunk = time.perf_counter()
        *carry, losses = _compiled_chunk(net, opt, batch_size, n, grad)(
            *carry, ids, data_key, dropout_key, jnp.uint32(start))
        carry, losses = tuple(carry), np.asarray(losses)
        _check_losses(fn, losses, start, run, checkpoint_dir)
        seconds = time.perf_counter() - t_chunk
        val = evaluation.evaluate_checked(net, carry[0], carry[1], val_x, val_y, min(_EVAL_BATCH, eval_windows))["loss"]
        record = {"step": start + n, "train_loss": float(losses.mean()), "val_loss": val,
                  "lr": history.learning_rate(carry[2]), "time": time.perf_counter() - t0,
                  "chars_per_s": n * batch_size * net.input_shape[0] / seconds}
        for k in HISTORY_KEYS:
            run["history"][k].append(record[k])
        run["step"] = start + n
        if val < run["best_val_loss"]:
            run.update(best_step=run["step"], best_val_loss=val)
            best = {"params": jax.tree_util.tree_map(jnp.copy, carry[0]),
                    "state": jax.tree_util.tree_map(jnp.copy, carry[1])}
        if progress:
            print_fn(progress_line(record, steps))
        if ckpt_path is not None:
            os.makedirs(os.fspath(checkpoint_dir), exist_ok=True)
            save_checkpoint(ckpt_path, carry, best, run)
    return LMResult(*carry, best["params"], best["state"], run["best_step"], run["history"], run["step"] - start_step)
