"""The language-model half of the ``fnet`` command: ``fnet train --model lstm|rnn|gru|gpt`` on a text
(:func:`train`), ``fnet evaluate`` of such a run (:func:`evaluate`) and ``fnet sample`` (:func:`sample`).

A language model trains by steps (:func:`fnet.lm.fit_lm`) in the same run folder as every other
model (:mod:`fnet.runs`: marker, lock, config.json, checkpoint, ``--resume``, ``--overwrite``),
and its results are a validation loss in nats per character (:func:`fnet.lm.validation_loss`).
Like :mod:`fnet.cli`, nothing here imports jax at module level.
"""

from __future__ import annotations

import math
import sys

#: Default number of characters ``fnet sample`` generates.
SAMPLE_LENGTH = 500
#: Default prompt of ``fnet sample``: a new line, where a speaker's name starts in the plays.
SAMPLE_PROMPT = "\n"
#: Steps between two evaluations (and checkpoints) of ``fnet train`` for a language model.
EVAL_EVERY = 100


def language_models() -> list[str]:
    """The names of the registry's language models (:attr:`fnet.models.Model.language_model`)."""
    from fnet import models

    return [name for name, m in models.MODELS.items() if m.language_model]


def check_options(args) -> None:
    """Refuse, in one line, what a language-model run cannot use: a data set that is not a text,
    options of the other models (``--epochs``, ``--early-stopping``, ``--filters``,
    ``--dense-width``, ``--norm``, ``--activation``), step-wise decays defined per epoch, unequal
    layer widths, a warmup as long as the run, the options of the other kind of language model
    (:func:`_check_architecture`), and ``--distributed``."""
    from fnet import data, runs

    if data.text_dataset_name(args.data) is None:
        raise ValueError(f"--data {args.data}: --model {args.model} is a character language model, which trains on a "
                         f"text; give --data {' or '.join(data.TEXT_DATASETS)}")
    given = {"epochs": args.epochs, "early_stopping": args.early_stopping, "filters": args.filters,
             "dense_width": args.dense_width, "norm": args.norm != "none" and args.norm,
             "activation": args.activation != "relu" and args.activation}
    for option, value in given.items():
        if value:
            flag = f"--{option.replace('_', '-')}"
            raise ValueError(f"{flag} {runs.show(value)}: --model {args.model} is a language model, trained by --steps "
                             f"(its layers are fixed: embedding, {args.model}, dense); {flag} applies to the other models")
    if args.schedule not in ("constant", "cosine"):
        raise ValueError(f"--schedule {args.schedule} decays per epoch; a language model trains by steps: give "
                         "--schedule constant or cosine (to lr/10 at the last step)")
    if len(set(args.hidden)) > 1:
        raise ValueError(f"--hidden {runs.show(args.hidden)}: a language model's layers have one width; give it once "
                         "per layer, e.g. 512,512 for two layers of 512")
    if args.warmup >= args.steps:
        raise ValueError(f"--warmup {args.warmup}: the warmup must be shorter than the run's --steps {args.steps}")
    _check_architecture(args)
    if getattr(args, "distributed", False):
        raise ValueError(f"--distributed: --model {args.model} trains on one device (data-parallel language models "
                         "are not supported yet)")
    if args.eval_every is not None and args.eval_every < 1:
        raise ValueError(f"--eval-every must be an integer >= 1 (steps), got {args.eval_every}")


def _check_architecture(args) -> None:
    """The options of one kind of language model only: --embed for the recurrent ones; --heads,
    --tie for the GPT (whose embedding width is its --hidden width, and whose initialization is
    GPT-2's, fixed)."""
    from fnet import runs

    if args.model != "gpt":
        if args.embed < 1:
            raise ValueError(f"--embed must be an integer >= 1, got {args.embed}")
        for option in ("heads", "tie"):
            if getattr(args, option):
                raise ValueError(f"--{option} {runs.show(getattr(args, option))}: --model {args.model} is a recurrent "
                                 f"language model; --{option} applies to --model gpt")
        return
    if args.embed:
        raise ValueError(f"--embed {args.embed}: a GPT's embedding width is its width, --hidden (one per block, e.g. "
                         f"{runs.show(args.hidden)})")
    if args.init != "xavier":
        raise ValueError(f"--init {args.init}: a GPT's initialization is fixed (GPT-2's: tables N(0, 0.02), "
                         "projections Xavier)")
    if args.heads < 1 or args.hidden[0] % args.heads:
        raise ValueError(f"--heads {args.heads}: the heads must divide the width --hidden {args.hidden[0]} (each head "
                         "takes width / heads columns)")


def _load_text(args, data_dir):
    from fnet import data

    return data.load_text(args.data, data_dir=data_dir)


def build(options, vocab_size: int):
    """The network and optimizer of a language-model run from its options (a
    :class:`fnet.runs.RunOptions` or the parsed command line) and its vocabulary size; the one
    place ``fnet train``, ``fnet evaluate`` and ``fnet sample`` build them. The learning rate
    rises linearly from 0 over ``warmup`` steps, then a cosine schedule decays it to ``lr / 10``
    at the run's last step (nanoGPT's ``min_lr``), or it stays constant."""
    from fnet import cli_train, models, schedules

    architecture = ({"heads": options.heads, "tie": options.tie} if options.model == "gpt"
                    else {"embed": options.embed, "init": options.init})
    net = models.build(options.model, (options.context,), vocab_size, hidden=options.hidden, dropout=options.dropout,
                       weight_decay=0.0 if options.optimizer == "adamw" else options.weight_decay, **architecture)
    decay = options.steps - options.warmup
    lr = schedules.cosine(options.lr, decay, alpha=0.1) if options.schedule == "cosine" else options.lr
    lr = schedules.warmup(lr, options.warmup)
    return net, cli_train.make_optimizer(options.optimizer, lr, options.weight_decay, options.clip, options.beta2)


def _check_run_size(args, net, opt, text) -> None:
    """Refuse a window longer than the text, too many steps, or a step that does not fit the memory."""
    import jax
    import numpy as np

    from fnet import limits, runs

    for part, ids in (("training", text.train), ("validation", text.val)):
        if args.context >= len(ids):
            raise ValueError(f"--context {args.context}: the {part} part of {text.name} has only {len(ids)} characters")
    limits.check_steps(1, args.steps, option="--steps")
    batch = jax.ShapeDtypeStruct((args.batch_size, args.context), np.int32)
    sizes = " ".join(f"--{k.replace('_', '-')} {runs.show(getattr(args, k))}"
                     for k in ("hidden", "heads" if args.model == "gpt" else "embed", "context", "batch_size"))
    limits.check_memory(limits.step_memory(net, opt, batch, batch), sizes, limits.available_memory())


def train(args, out, kind: str, stored) -> int:
    """``fnet train`` of a language model, once its options are resolved and checked."""
    from fnet import plots, runs

    text = _load_text(args, args.data_dir)
    net, opt = build(args, text.vocab_size)
    _check_run_size(args, net, opt, text)
    args.eval_every = args.eval_every or EVAL_EVERY
    config = runs.new_config({k: v for k, v in vars(args).items() if k != "func"}, net.config, text)
    lease = runs.start(out, kind, resume=args.resume, overwrite=args.overwrite, stored=stored, config=config,
                       check_resume=lambda folder: runs.check_resumable(folder, net, opt, args.steps, unit="step"))
    importing = plots.import_pyplot_in_background()
    try:
        result = _fit(args, out, lease, text, net, opt)
        return _finish(args, out, result, net, text)
    finally:
        importing.join()
        lease.release()


def _fit(args, out, lease, text, net, opt):
    """:func:`fnet.lm.fit_lm` into the run folder; for ``--overwrite``, its first evaluation
    interval into the lease's staging folder, swapped in once its checkpoint is written
    (:func:`fnet.cli_train.replace_run`), then resumed there bit for bit."""
    import functools

    from fnet import cli_train, lm, nets, train

    if not args.quiet:
        verb = "resuming" if args.resume else "training"
        print(f"{verb} {net.name} ({nets.num_params(net):,} parameters) on {text.name} ({len(text.train):,} train / "
              f"{len(text.val):,} val characters, vocabulary {text.vocab_size}) for {args.steps} steps of "
              f"{args.batch_size} windows with {args.optimizer} lr {args.lr}, {args.grad} gradients -> {out}", flush=True)
    fit = functools.partial(lm.fit_lm, net, opt, text, batch_size=args.batch_size, seed=args.seed, grad=args.grad,
                            eval_every=args.eval_every, print_fn=lambda line: print(line, flush=True))
    try:
        if not args.overwrite:
            return fit(steps=args.steps, checkpoint_dir=out, resume=args.resume, progress=not args.quiet)
        return cli_train.replace_run(args, lease, lambda n, **options: fit(steps=n, **options),
                                     min(args.eval_every, args.steps), args.steps, lm.progress_line)
    except train.TrainingDiverged as e:
        if lease.replaces is None:  # never into a run not yet replaced
            cli_train.write_outputs(out, e.history, args.quiet)
        raise


def _finish(args, out, result, net, text) -> int:
    """history.json, curves.png, the full validation loss of the best parameters and results.json."""
    from fnet import cli_train, lm, runs

    if args.resume and result.steps_run == 0:
        missing = runs.missing_outputs(out)
        print(f"run {out} already finished ({result.history['step'][-1]} steps); nothing to train"
              + (f"; regenerating {', '.join(missing)}" if missing else "; its outputs are all present"))
        if runs.HISTORY_NAME in missing or runs.CURVES_NAME in missing:
            cli_train.write_outputs(out, result.history, args.quiet)
        if runs.RESULTS_NAME not in missing:
            return 0
    else:
        cli_train.write_outputs(out, result.history, args.quiet)
    val = lm.validation_loss(net, result.best_variables, text.val)
    runs.write_results(out, {"best_step": result.best_step, "val_loss": val, "val_bits_per_char": lm.bits(val),
                             "val_windows": lm.VAL_WINDOWS, "context": net.config.context,
                             "wall_time_s": result.history["time"][-1]})
    print(f"{_val_line(val, net)} (params of step {result.best_step}, best on validation); run saved in {out}")
    return 0


def _val_line(val: float, net) -> str:
    from fnet import lm

    return (f"validation loss {val:.4f} nats/char ({lm.bits(val):.3f} bits/char; mean over {lm.VAL_WINDOWS} windows "
            f"of {net.config.context} characters from the last 10% of the text)")


def _rebuild(run, what: str):
    """The network and optimizer of a finished language-model run and its vocabulary (from
    config.json's ``dataset``), checked against the recorded network."""
    from fnet import runs

    vocab = run.dataset.get("vocab") if isinstance(run.dataset, dict) else None
    if not isinstance(vocab, str) or not vocab:
        raise ValueError(f"{what}: {run.config_path} records no vocabulary (dataset.vocab); it was edited or damaged")
    try:
        net, opt = build(run.options, len(vocab))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{what}: {run.config_path} does not describe a run fnet can rebuild: {e}") from None
    runs.check_net(run, net.config)
    return net, opt, vocab


def evaluate(args, run) -> int:
    """``fnet evaluate`` of a language-model run: the full validation loss of its best parameters."""
    from fnet import lm, nets, runs

    net, opt, vocab = _rebuild(run, "evaluate")
    text = _load_text(run.options, args.data_dir or run.data_dir)
    if text.vocab != vocab:
        raise ValueError(f"evaluate: the vocabulary of {text.name} ({text.vocab_size} characters) differs from the one "
                         f"the run in {run.folder} was trained with ({len(vocab)} characters, its config.json)")
    params, state = runs.load_best(run, net, opt)
    val = lm.validation_loss(net, nets.Variables(params, state), text.val)
    print(f"{args.run_dir}: {_val_line(val, net)}")
    return 0


def sample(args) -> int:
    """``fnet sample RUN``: print ``--prompt`` and ``--length`` characters generated after it by the
    run's best parameters at ``--temperature`` (0: greedy), drawn with ``--seed``."""
    import jax

    from fnet import data, limits, nets, runs, sampling

    if args.length < 1:
        raise ValueError(f"--length must be an integer >= 1 (characters to generate), got {args.length}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0 (0: greedy), got {args.temperature}")
    seed = limits.check_seed("--seed", args.seed)
    if args.prompt == "":
        raise ValueError("--prompt is empty; give at least one character to start from (default: a new line)")
    run = runs.load(args.run_dir, what="sample")
    if run.options.model not in language_models():
        raise ValueError(f"sample: {args.run_dir} holds a run of --model {run.options.model}, which is not a language "
                         f"model; fnet sample generates text from runs of --model {', '.join(language_models())}")
    net, opt, vocab = _rebuild(run, "sample")
    try:
        prompt = data.encode(args.prompt, vocab)
    except ValueError as e:
        raise ValueError(f"--prompt: {str(e).removeprefix('encode: ')} (the run's {len(vocab)} characters are "
                         f"{vocab!r})") from None
    params, state = runs.load_best(run, net, opt, "sample")
    kept = sampling.cropped(net, len(prompt))
    if kept < len(prompt):
        print(f"note: the prompt has {len(prompt)} characters; --model {run.options.model} sees at most its context of "
              f"{kept}, so it continues the last {kept}", file=sys.stderr)
    ids = sampling.generate(net, nets.Variables(params, state), prompt, args.length, temperature=args.temperature,
                            key=jax.random.PRNGKey(seed))
    print(args.prompt + data.decode(ids, vocab))
    return 0
