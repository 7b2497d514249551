"""What the heads of a small character GPT look at: the attention weights of every head of every
layer on one line of Shakespeare, as a grid of heatmaps, and each head classified by measured
scores averaged over many validation windows.

The model: :func:`fnet.models.gpt` (3 pre-norm blocks of 4 causal heads, width 96, context 64)
trained on tiny-shakespeare by :func:`fnet.lm.fit_lm` (hand-written backward chain; AdamW 2e-3,
betas (0.9, 0.99), decay 0.1 on the weights, 100 warmup steps then cosine to 2e-4, gradients
clipped at global norm 1, batch 16).

The weights are read from the forward pass itself: :func:`attention_weights` walks the
composition's cache beside its modules and returns the softmax weights
``P = softmax(q k^T / sqrt(d))`` (N, h, T, T) that each multi-head attention stored for its
backward (:class:`fnet.layers.AttentionCache`), so no second implementation of the model is
involved. Scores of a head, each the mean over the query positions t >= 1 of the whole
validation text (its last 10%) cut into consecutive windows of the context's length (1,742
windows of 64: every character is a query once, at its place in its window):

- previous: the weight on t - 1;
- self: the weight on t;
- word start: the weight on the first character of t's word (the position after the last space
  or newline at or before t), at the positions whose word started inside the window at t - 2 or
  earlier, so that the target is neither t nor t - 1;
- matching quote: at a closing quote, the weight on its opening quote (:func:`quote_pairs`);
- newline: the weight on the last newline before t, where it is at t - 2 or earlier (a head that
  keeps track of where the line, and so the verse or the speaker's name, began);
- entropy: ``-sum_s P[t, s] log P[t, s]`` in nats (uniform causal attention has log(t + 1)).

Chance is what uniform causal attention (1 / (t + 1) on each of t + 1 keys) gives on the same
positions. A head FOLLOWS a pattern when its score is above :data:`THRESHOLD` = 0.5, more than
half of its weight on that one position on average (a majority no other position can have), and
at least :data:`LIFT` times chance (the previous character's chance is 0.06 in windows of 64, so 0.5 is
8 times it). Every head's strongest pattern (its highest score / chance) is reported beside.

Brackets and double quotes do not occur in tiny-shakespeare (its 65 characters have none), so
quotes are apostrophes, which are also elisions ("I'll", "'tis"): :func:`quote_pairs` pairs them
by a rule, and the pairs it finds in the validation text include false ones (a possessive "ladies'"
closing an elided "'tis"). The line shown, from the validation part, has two true pairs.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from fnet import data, layers, lm, models, nets, optim, plots, schedules

NAME = "attention-maps"
DESCRIPTION = ("Attention weights of every head of a small character GPT on a line, and which heads look at the "
               "previous character, the word's start, the matching quote.")
#: A passage of the validation text (The Taming of the Shrew) with two quoted phrases.
LINE = "'Frets, call you these?' quoth she; 'I'll fume\nwith them:'\n"
PATTERNS = ("previous", "word_start", "matching_quote", "newline", "self")
THRESHOLD = 0.5
LIFT = 5.0
CHUNK = 128
_BREAKS = " \n"


def attention_weights(module, cache, path: str = "") -> list[tuple[str, jax.Array]]:
    """Every multi-head attention's weights in a forward pass's cache, in forward order.

    A combinator's cache holds its children's caches in the order of ``module.children``
    (:func:`fnet.combinators.serial` and ``parallel``; ``tied_embedding`` adds its head's after
    them), so the walk pairs each child with its cache; a leaf whose cache is a
    :class:`fnet.layers.MultiHeadCache` contributes its attention's softmax weights (stored by a
    forward with ``recompute=False``, the default; a recomputing one keeps None there).

    Args:
      module: the composition (``net.module``); cache: the third output of its ``forward``.

    Returns:
      ``[(path, P), ...]``: ``path`` the children's names joined by "/" (e.g.
      "serial1/residual1/branches/block/self_attention1"), ``P`` of shape (N, h, S, T), each row a
      distribution over the keys (zero where masked: above the diagonal for causal attention).
    """
    if module.children:
        found = []
        for (name, child), child_cache in zip(module.children, cache):
            found += attention_weights(child, child_cache, f"{path}/{name}" if path else name)
        return found
    return [(path, cache.attention.weights)] if isinstance(cache, layers.MultiHeadCache) else []


@functools.lru_cache(maxsize=4)
def _compiled_maps(module):
    """One compiled eval-mode forward returning only the weights (a cache may hold Python values,
    such as GELU's form, that a compiled function cannot return)."""

    def maps(params, state, x):
        _, _, cache = module.forward(params, state, x, train=False)
        return tuple(w for _, w in attention_weights(module, cache))

    return jax.jit(maps)


def attention_maps(net, variables, x) -> np.ndarray:
    """The attention weights of every layer of ``net`` on token ids ``x`` (N, T), eval mode: an
    array (L, N, h, T, T) (layers in forward order) from one forward pass (:func:`attention_weights`)."""
    params, state = variables
    return np.stack([np.asarray(w) for w in _compiled_maps(net.module)(params, state, x)])


def quote_pairs(chars: str) -> list[tuple[int, int]]:
    """``[(closing, opening), ...]``: the apostrophes of ``chars`` that pair as quotes.

    An apostrophe opens when it starts a word (at the start, or after a non-letter) and is
    followed by a letter; it closes when it follows a non-space and the next character is known
    and not a letter (a space, punctuation, a newline; at the last character of a window, "talk'"
    may be "talk'd"). A closing one pairs with the latest unpaired opening one before it.
    Elisions inside a word ("I'll") are neither.
    """
    openings, pairs = [], []
    for t, c in enumerate(chars):
        if c != "'":
            continue
        before = chars[t - 1] if t else ""
        after = chars[t + 1] if t + 1 < len(chars) else ""
        if not before.isalpha() and after.isalpha():
            openings.append(t)
        elif before and before not in _BREAKS and after and not after.isalpha() and openings:
            pairs.append((t, openings.pop()))
    return pairs


def pattern_targets(chars: str) -> dict[str, list[tuple[int, int]]]:
    """``{pattern: [(t, s), ...]}``: the (query, key) positions of each pattern in one window (see
    the module docstring for the rules)."""
    n = len(chars)
    word, line = [], []
    last_break = last_newline = None
    for t, c in enumerate(chars):
        if last_newline is not None and last_newline <= t - 2:
            line.append((t, last_newline))
        if c in _BREAKS:
            last_break = t
            last_newline = t if c == "\n" else last_newline
        elif last_break is not None and last_break + 1 <= t - 2:
            word.append((t, last_break + 1))
    return {"previous": [(t, t - 1) for t in range(1, n)], "word_start": word, "matching_quote": quote_pairs(chars),
            "newline": line, "self": [(t, t) for t in range(1, n)]}


def head_scores(chunks) -> dict:
    """The scores of every head (module docstring), over all the windows of ``chunks``.

    Args:
      chunks: an iterable of ``(maps, windows)``: the weights (L, N, h, T, T) of N windows (from
        :func:`attention_maps`) and the windows as N strings of T characters; consumed one chunk
        at a time, so that the maps of many windows never sit in memory together.

    Returns:
      ``{"scores": {pattern: (L, h) nested lists, None where no window has the pattern},
      "chance": {pattern: float or None}, "positions": {pattern: int}, "entropy": (L, h),
      "uniform_entropy": float, "checks": {"row_sum_error": max |sum_s P[t, s] - 1|,
      "future_weight": max P[t, s] over s > t}}`` (entropies in nats).
    """
    picked, queries = {p: [] for p in PATTERNS}, {p: [] for p in PATTERNS}
    entropy, count, row_error, future, shape = 0.0, 0, 0.0, 0.0, None
    for maps, windows in chunks:
        maps = np.asarray(maps, np.float64)
        shape = maps.shape
        for pattern in PATTERNS:
            idx = np.array([(n, t, s) for n, w in enumerate(windows) for t, s in pattern_targets(w)[pattern]],
                           int).reshape(-1, 3)
            picked[pattern].append(maps[:, idx[:, 0], :, idx[:, 1], idx[:, 2]])  # advanced indices first: (K, L, h)
            queries[pattern].append(idx[:, 1])
        p = maps[:, :, :, 1:, :]
        entropy = entropy + np.sum(-np.sum(p * np.log(np.where(p > 0, p, 1)), axis=-1), axis=(1, 3))
        count += p.shape[1] * p.shape[3]
        row_error = max(row_error, float(np.max(np.abs(maps.sum(-1) - 1))))
        future = max(future, float(np.max(np.where(np.tril(np.ones(shape[-2:], bool)), 0, maps))))
    out = {"scores": {}, "chance": {}, "positions": {}}
    for pattern in PATTERNS:
        values, t = np.concatenate(picked[pattern]), np.concatenate(queries[pattern])
        out["positions"][pattern] = len(t)
        out["scores"][pattern] = values.mean(axis=0).tolist() if len(t) else [[None] * shape[2]] * shape[0]
        out["chance"][pattern] = float(np.mean(1 / (t + 1))) if len(t) else None
    out["entropy"] = (entropy / count).tolist()
    out["uniform_entropy"] = float(np.mean(np.log(np.arange(2, shape[-1] + 1))))
    out["checks"] = {"row_sum_error": row_error, "future_weight": future}
    return out


def classify(scores: dict, chance: dict) -> list[list[list[str]]]:
    """``labels[l][k]``: the patterns head k of layer l follows (score > :data:`THRESHOLD` and >
    :data:`LIFT` x chance), possibly none."""
    layers_, heads = np.shape(scores[PATTERNS[0]])
    return [[[p for p in PATTERNS if chance[p] is not None and scores[p][l][k] > max(THRESHOLD, LIFT * chance[p])]
             for k in range(heads)] for l in range(layers_)]


def _config(quick: bool) -> dict:
    if quick:
        return {"layers": 2, "heads": 2, "width": 16, "context": 64, "batch": 8, "steps": 30, "eval_every": 15,
                "lr": 2e-3, "warmup": 5, "windows": 16}
    return {"layers": 3, "heads": 4, "width": 96, "context": 64, "batch": 16, "steps": 2500, "eval_every": 250,
            "lr": 2e-3, "warmup": 100, "windows": None}


def _chunks(net, variables, text, windows):
    """``(maps, strings)`` of ``windows`` (N, T) ids, :data:`CHUNK` windows at a time."""
    for start in range(0, len(windows), CHUNK):
        x = windows[start:start + CHUNK]
        yield attention_maps(net, variables, x), [text.decode(w) for w in x]


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train the GPT, read its attention maps on :data:`LINE` and on the validation text, score
    and classify every head.

    Returns:
      ``{"quick", "config", "params", "history": {"step", "val_loss", "time"}, "val_loss",
      "line", "line_weights" (L, h, T, T), "windows", "threshold", "lift", "heads": [{"layer",
      "head", "scores": {pattern}, "lift": {pattern: score / chance}, "entropy", "follows"}],
      "chance", "positions", "uniform_entropy", "checks"}`` (layers and heads numbered from 1;
      see :func:`head_scores`).
    """
    cfg = _config(quick)
    text = data.load_text("shakespeare", data_dir=data_dir)
    net = models.gpt(text.vocab_size, context=cfg["context"], layers=cfg["layers"], heads=cfg["heads"],
                     width=cfg["width"])
    lr = schedules.warmup(schedules.cosine(cfg["lr"], cfg["steps"] - cfg["warmup"], alpha=0.1), cfg["warmup"])
    opt = optim.chain(optim.clip_by_global_norm(1.0),
                      optim.adamw(lr, b2=0.99, weight_decay=0.1, mask=optim.weights_only))
    fit = lm.fit_lm(net, opt, text, steps=cfg["steps"], batch_size=cfg["batch"], seed=seed,
                    eval_every=cfg["eval_every"], progress=False)
    line = attention_maps(net, fit.variables, text.encode(LINE)[None])[:, 0]  # (L, h, T, T)
    t = cfg["context"]
    windows = np.asarray(text.val[: len(text.val) // t * t]).reshape(-1, t)[: cfg["windows"]]
    measured = head_scores(_chunks(net, fit.variables, text, windows))
    labels, chance = classify(measured["scores"], measured["chance"]), measured["chance"]
    heads = []
    for l, k in np.ndindex(cfg["layers"], cfg["heads"]):
        scores = {p: measured["scores"][p][l][k] for p in PATTERNS}
        heads.append({"layer": l + 1, "head": k + 1, "scores": scores, "entropy": measured["entropy"][l][k],
                      "lift": {p: None if chance[p] is None else scores[p] / chance[p] for p in PATTERNS},
                      "follows": labels[l][k]})
    return {"quick": quick, "config": cfg, "params": nets.num_params(net),
            "history": {"step": fit.history["step"], "val_loss": fit.history["val_loss"], "time": fit.history["time"]},
            "val_loss": lm.validation_loss(net, fit.variables, text.val), "line": LINE,
            "line_weights": np.round(line, 4).tolist(), "windows": len(windows), "threshold": THRESHOLD,
            "lift": LIFT, "heads": heads,
            **{k: measured[k] for k in ("chance", "positions", "uniform_entropy", "checks")}}


def _fmt(value, digits: int = 3) -> str:
    """A score, or "-" where the windows held no position of its pattern."""
    return "-" if value is None else f"{value:.{digits}f}"


def _label(head: dict) -> str:
    """The patterns a head follows, or its strongest one's lift over chance."""
    if head["follows"]:
        return ", ".join(head["follows"])
    lifts = {p: v for p, v in head["lift"].items() if v is not None}
    best = max(lifts, key=lifts.get)
    return f"none (strongest: {best}, {lifts[best]:.1f}x chance)"


def summary(result: dict) -> str:
    """The model, then one row per head: its scores, entropy and the patterns it follows."""
    c = result["config"]
    positions = ", ".join(f"{p} {n:,}" for p, n in result["positions"].items())
    chance = ", ".join(f"{p} {_fmt(result['chance'][p])}" for p in PATTERNS)
    lines = [(f"GPT {c['layers']} layers x {c['heads']} heads, width {c['width']}, context {c['context']} "
              f"({result['params']:,} params), {c['steps']} steps: validation loss {result['val_loss']:.3f} nats/char"),
             (f"mean attention weight over {result['windows']} validation windows (positions: {positions}); chance: "
              f"{chance}; follows: > {result['threshold']} and > {result['lift']:g} x chance"),
             f"{'head':<6} {'previous':>8} {'word':>6} {'quote':>6} {'newline':>7} {'self':>6} {'entropy':>7}  follows"]
    for h in result["heads"]:
        s = h["scores"]
        lines.append(f"L{h['layer']}H{h['head']:<3} {_fmt(s['previous']):>8} {_fmt(s['word_start']):>6} "
                     f"{_fmt(s['matching_quote']):>6} {_fmt(s['newline']):>7} {_fmt(s['self']):>6} {h['entropy']:>7.2f}  "
                     f"{_label(h)}")
    lines.append(f"(uniform causal attention's entropy: {result['uniform_entropy']:.2f} nats)")
    return "\n".join(lines)


def _shown(c: str) -> str:
    return {" ": "\u2423", "\n": "\u21b5"}.get(c, c)


def plot(result: dict, path) -> None:
    """A grid of heatmaps, layers down and heads across: head k's weights on :data:`LINE`, query
    characters down the rows, key characters across, with the head's validation scores."""
    plt = plots.pyplot()
    weights = np.asarray(result["line_weights"])
    n_layers, n_heads, t = weights.shape[:3]
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(4.4 * n_heads, 4.8 * n_layers), squeeze=False,
                             layout="constrained")
    chars = [_shown(c) for c in result["line"]]
    for h in result["heads"]:
        ax = axes[h["layer"] - 1][h["head"] - 1]
        future = np.triu(np.ones((t, t), bool), 1)  # masked keys: left blank
        ax.imshow(np.ma.masked_array(weights[h["layer"] - 1, h["head"] - 1], future), cmap="magma_r", vmin=0, vmax=1)
        ax.set_xticks(range(t), chars, fontsize=5, family="monospace")
        ax.set_yticks(range(t), chars, fontsize=5, family="monospace")
        ax.tick_params(length=0, pad=1)
        s = h["scores"]
        ax.set_title(f"layer {h['layer']} head {h['head']}: {_label(h)}\nprev {_fmt(s['previous'], 2)}  word "
                     f"{_fmt(s['word_start'], 2)}  quote {_fmt(s['matching_quote'], 2)}  newline {_fmt(s['newline'], 2)}  "
                     f"self {_fmt(s['self'], 2)}  "
                     f"H {h['entropy']:.2f}", fontsize=7)
    fig.suptitle(f"Attention weights (query down, key across) of a {n_layers}-layer character GPT "
                 f"(val loss {result['val_loss']:.2f})\ntitles: mean weights over {result['windows']} "
                 f"validation windows; follows: > {result['threshold']} and > {result['lift']:g} x chance",
                 fontsize=9)
    plots.save_figure(fig, path, dpi=120)
