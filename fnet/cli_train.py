"""``fnet train`` (and the part of ``fnet evaluate`` that rebuilds its runs): the options, their
defaults and checks, the network, data and optimizer they build, and the run. A language model's
run continues in :mod:`fnet.cli_lm`. Like :mod:`fnet.cli`, nothing here imports jax at module level.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine")
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity")  # fnet.modules.ACTIVATIONS (tested)
NORMS = ("none", "batchnorm", "layernorm")
#: Defaults of the `fnet train` options that are left unset on the command line (the model's
#: widths, dropout, epochs and batch size per data set: fnet.models.preset). Every option parses to
#: None when not given, so that a resumed run can tell which ones were given.
TRAIN_DEFAULTS = {
    "data": "digits", "model": "mlp", "activation": "relu", "norm": "none", "weight_decay": 0.0, "init": "he",
    "optimizer": "adam", "lr": 1e-3, "schedule": "constant", "lr_decay": 0.95, "early_stopping": None,
    "grad": "manual", "seed": 0, "context": 0, "embed": 0, "clip": 0.0, "heads": 0, "tie": False, "warmup": 0,
    "beta2": 0.999,
}


def _select_device(device: str) -> None:
    import jax

    try:
        devices = jax.devices(device)
    except RuntimeError:
        raise RuntimeError(f"--device {device}: JAX sees no {device} device (available: {jax.devices()})") from None
    jax.config.update("jax_default_device", devices[0])


def _sizes(option: str):
    """An argparse type for comma-separated positive sizes (``100,100``; "" or "none": none)."""

    def parse(text: str) -> tuple[int, ...]:
        if text.strip() in ("", "none"):
            return ()
        try:
            dims = tuple(int(h) for h in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be comma-separated sizes like 100,100, got {text!r}") from None
        if any(h < 1 for h in dims):
            raise argparse.ArgumentTypeError(f"{option} sizes must be positive, got {text!r}")
        return dims

    return parse


def _positive(option: str):
    """An argparse type for one positive size."""

    def parse(text: str) -> int:
        sizes = _sizes(option)(text)
        if len(sizes) != 1:
            raise argparse.ArgumentTypeError(f"{option} must be one positive size like 128, got {text!r}")
        return sizes[0]

    return parse


def _parse_init(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def check_options(args) -> None:
    """Every option's range, before anything is read or written; one clear message each."""
    from fnet import init, limits

    def number(option, value, ok, rule):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"--{option.replace('_', '-')} must be {rule}, got {value}")

    number("lr", args.lr, lambda v: v > 0, "a finite number > 0")
    number("lr_decay", args.lr_decay, lambda v: 0 < v <= 1, "in (0, 1] (the factor applied per epoch)")
    number("weight_decay", args.weight_decay, lambda v: v >= 0, "a finite number >= 0")
    number("clip", args.clip, lambda v: v >= 0, "a finite number >= 0 (the gradients' global-norm bound; 0: none)")
    number("beta2", args.beta2, lambda v: 0 < v < 1, "in (0, 1) (Adam's second-moment decay)")
    if args.beta2 != TRAIN_DEFAULTS["beta2"] and args.optimizer not in ("adam", "adamw"):
        raise ValueError(f"--beta2 {args.beta2}: --optimizer {args.optimizer} has no second moment; --beta2 applies to "
                         "adam and adamw")
    if args.dropout is not None or args.model == "mlp":  # None: a CNN's own rate
        number("dropout", args.dropout, lambda v: 0 <= v < 1, "in [0, 1) (the probability of dropping a unit)")
    counts = ("steps", "context") if is_language_model(args.model) else ("epochs",)
    for option in (*counts, "batch_size"):
        number(option, getattr(args, option), lambda v: v == int(v) and v >= 1, "an integer >= 1")
    number("warmup", args.warmup, lambda v: v == int(v) and v >= 0, "an integer >= 0 (steps)")
    if args.early_stopping is not None:
        number("early_stopping", args.early_stopping, lambda v: v == int(v) and v >= 1, "an integer >= 1 (epochs)")
    limits.check_seed("--seed", args.seed)
    if isinstance(args.init, str):
        if args.init not in init.INITIALIZERS:
            raise ValueError(f"--init must be one of {', '.join(init.INITIALIZERS)} or a float std, got {args.init!r}")
    else:
        number("init", args.init, lambda v: v >= 0, "a name or a finite float std >= 0")
    for option, choices in (("activation", ACTIVATIONS), ("norm", NORMS), ("optimizer", OPTIMIZERS),
                            ("schedule", SCHEDULES), ("grad", ("manual", "autodiff"))):
        if getattr(args, option) not in choices:
            raise ValueError(f"--{option} must be one of {', '.join(choices)}, got {getattr(args, option)!r}")


def is_language_model(model: str) -> bool:
    from fnet import models

    return models.MODELS[models.canonical_name(model, "fnet")].language_model


def _check_model_options(args) -> None:
    """Refuse, in one line, an option that the chosen model would ignore: ``--filters`` and
    ``--dense-width`` for the MLP; ``--hidden``, ``--norm`` and ``--activation`` for a CNN, whose
    layers are fixed (ReLU, and batch norm in ``small_cnn``; see :data:`fnet.models.MODELS`); the
    options of the other kind for a language model (:func:`fnet.cli_lm.check_options`) and for the
    others (``--steps``, ``--context``, ``--embed``, ``--eval-every``)."""
    from fnet import cli_lm, data, models, runs

    if is_language_model(args.model):
        return cli_lm.check_options(args)
    if data.text_dataset_name(args.data) is not None:
        raise ValueError(f"--data {args.data} is a text: train a language model on it (--model "
                         f"{', '.join(cli_lm.language_models()[:-1])} or {cli_lm.language_models()[-1]})")
    for option in ("steps", "context", "embed", "eval_every", "warmup", "heads", "tie"):
        if getattr(args, option):
            raise ValueError(f"--{option.replace('_', '-')} {getattr(args, option)}: --model {args.model} trains by "
                             f"epochs; --{option.replace('_', '-')} applies to the language models "
                             f"({', '.join(cli_lm.language_models())})")
    cnns = ", ".join(name for name, m in models.MODELS.items() if m.images)
    if not models.MODELS[args.model].images:
        for option in ("filters", "dense_width"):
            if getattr(args, option):
                flag = f"--{option.replace('_', '-')}"
                raise ValueError(f"{flag} {runs.show(getattr(args, option))}: --model {args.model} has no "
                                 f"convolutions; {flag} applies to the CNNs ({cnns}); the MLP takes --hidden")
        return
    if args.hidden:
        raise ValueError(f"--hidden {runs.show(args.hidden)}: --hidden sets the MLP's hidden sizes; --model "
                         f"{args.model} takes --dense-width (the width of its dense layer) and --filters")
    for option, default in (("norm", "none"), ("activation", "relu")):
        if getattr(args, option) != default:
            raise ValueError(f"--{option} {getattr(args, option)}: --model {args.model} has fixed layers (ReLU, "
                             f"and batch norm in small_cnn); --{option} applies to --model mlp only")


def _check_run_size(args, ds, net, opt) -> None:
    """Refuse, before anything is allocated or written, a run whose step count overflows the
    optimizer's counter or whose step does not fit the memory (:mod:`fnet.limits`)."""
    import jax

    from fnet import limits, runs

    limits.check_steps(args.epochs, len(ds.x_train) // args.batch_size)
    batch = lambda a: jax.ShapeDtypeStruct((args.batch_size, *a.shape[1:]), a.dtype)
    estimate = limits.step_memory(net, opt, batch(ds.x_train), batch(ds.y_train))
    options = ("model", "filters", "dense_width", "batch_size") if args.model != "mlp" else ("hidden", "batch_size")
    sizes = [f"--{k.replace('_', '-')} {runs.show(getattr(args, k))}" for k in options if getattr(args, k)]
    limits.check_memory(estimate, " ".join(sizes), limits.available_memory())


def _resolve_train_options(args, stored) -> None:
    """Fill in every option left unset: from the stored run (:class:`fnet.runs.RunOptions`) when
    resuming, else the defaults and the data set's preset. A resumed run refuses options that
    differ from the stored ones (:func:`fnet.runs.resume_options`)."""
    from fnet import models, runs

    if args.model is not None:
        args.model = model_name(args.model)
    args.data = _data_name(args.data if args.data is not None else stored.data if stored is not None else
                           default_data(args.model))
    if stored is not None:
        resumed = runs.resume_options(stored, {k: getattr(args, k) for k in runs.RUN_OPTIONS}, args.out)
        for k in runs.RUN_OPTIONS:
            setattr(args, k, getattr(resumed, k))
        return
    args.model = model_name(args.model or TRAIN_DEFAULTS["model"])
    for option, value in {**TRAIN_DEFAULTS, **models.preset(args.model, args.data)}.items():
        if getattr(args, option) is None:
            setattr(args, option, value)


def model_name(text: str) -> str:
    from fnet import models

    try:
        return models.canonical_name(text)
    except ValueError:
        raise ValueError(f"--model must be one of {', '.join(models.MODELS)}, got {text!r}") from None


def default_data(model: str | None) -> str:
    """The data set a model trains on when --data is left out: its preset's, else digits."""
    from fnet import models

    return models.preset(model, None).get("data", TRAIN_DEFAULTS["data"]) if model else TRAIN_DEFAULTS["data"]


def _data_name(text: str) -> str:
    """The canonical name of a data set of samples (:func:`fnet.data.canonical_name`) or of a text."""
    from fnet import data

    return data.text_dataset_name(text) or data.canonical_name(text)


def _make_learning_rate(args, steps_per_epoch: int):
    """The learning rate as a float or a schedule, from --lr, --schedule and --lr-decay."""
    from fnet import schedules

    if args.schedule == "constant":
        return args.lr
    if args.schedule == "step":
        return schedules.step_decay(args.lr, args.lr_decay, steps_per_epoch)
    if args.schedule == "exponential":
        return schedules.exponential(args.lr, args.lr_decay, steps_per_epoch)
    return schedules.cosine(args.lr, args.epochs * steps_per_epoch)


def make_optimizer(name: str, learning_rate, weight_decay: float, clip: float = 0.0, beta2: float = 0.999):
    """The optimizer ``name`` at ``learning_rate``, after clipping the gradients to a global norm
    of ``clip`` when ``clip > 0``. AdamW decays the weights only (:func:`fnet.optim.weights_only`:
    not biases, norms or position tables), by its decoupled ``weight_decay``; ``beta2`` is Adam's
    and AdamW's second-moment decay."""
    from fnet import optim

    if name == "adamw":
        opt = optim.adamw(learning_rate, b2=beta2, weight_decay=weight_decay, mask=optim.weights_only)
    else:
        opt = optim.adam(learning_rate, b2=beta2) if name == "adam" else getattr(optim, name)(learning_rate)
    return optim.chain(optim.clip_by_global_norm(clip), opt) if clip > 0 else opt


def build_run(args, ds):
    """The network and optimizer of a run from its (resolved) options and its data set; the one
    place both `fnet train` and `fnet evaluate` build them, so that they always agree."""
    from fnet import models

    regression = ds.num_classes == 0
    common = {"dropout": args.dropout, "init": args.init,
              "weight_decay": 0.0 if args.optimizer == "adamw" else args.weight_decay}
    if not models.MODELS[args.model].images:
        net = models.build(args.model, (ds.num_features,), ds.y_train.shape[1] if regression else ds.num_classes,
                           hidden=args.hidden, activation=args.activation, norm=None if args.norm == "none" else args.norm,
                           loss="mse" if regression else "softmax_cross_entropy", **common)
    else:
        if regression or ds.x_train.ndim != 4:
            raise ValueError(f"--model {args.model} is a convolutional network for images; --data {args.data} "
                             f"holds {'regression targets' if regression else 'samples of shape ' + str(ds.x_train.shape[1:])}")
        net = models.build(args.model, ds.x_train.shape[1:], ds.num_classes, filters=args.filters,
                           dense_width=args.dense_width, **common)
    if args.batch_size > len(ds.x_train):
        raise ValueError(f"--batch-size {args.batch_size} is larger than the {len(ds.x_train)} training samples of {args.data}")
    steps_per_epoch = len(ds.x_train) // args.batch_size
    opt = make_optimizer(args.optimizer, _make_learning_rate(args, steps_per_epoch), args.weight_decay, args.clip)
    return net, opt


def load_data(args, data_dir):
    """The run's data set: images with their channel axis for a CNN, flat samples for the MLP."""
    from fnet import data, models

    flatten = not models.MODELS[args.model].images
    return data.check_dataset(data.load(args.data, data_dir=data_dir, seed=args.seed,
                                        **({} if flatten or args.data not in data.IMAGE_DATASETS else {"flatten": False})))


def train(args) -> int:
    from fnet import cli_lm, distributed, plots, runs

    mesh = None
    if args.distributed:  # before anything touches a device
        if not args.out:
            raise ValueError("--distributed needs --out, the run directory shared by every process")
        distributed.initialize_from_env()
        mesh = distributed.data_mesh()
    lead = distributed.is_lead()  # only process 0 prints and writes files
    args.quiet = bool(args.quiet) or not lead
    data_name = _data_name(args.data or default_data(args.model and model_name(args.model)))
    out = runs.check_out_path(args.out or os.path.join(
        "runs", f"{data_name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"))
    args.out = str(out)
    kind = runs.inspect(out)
    if lead:  # the other processes of a distributed run leave the folder to process 0
        runs.check_out_kind(out, kind, resume=args.resume, overwrite=args.overwrite)
    stored = runs.stored_options(out) if args.resume else None
    _resolve_train_options(args, stored)
    check_options(args)
    _check_model_options(args)
    if args.resume:
        runs.check_checkpoint(out)

    if args.device:
        _select_device(args.device)
    if is_language_model(args.model):
        return cli_lm.train(args, out, kind, stored)
    ds = load_data(args, args.data_dir)
    net, opt = build_run(args, ds)
    _check_run_size(args, ds, net, opt)
    config = runs.new_config({k: v for k, v in vars(args).items() if k != "func"}, net.config, ds)
    lease = runs.start(out, kind, resume=args.resume, overwrite=args.overwrite, stored=stored, config=config,
                       check_resume=lambda folder: runs.check_resumable(folder, net, opt, args.epochs)) \
        if lead else None
    importing = plots.import_pyplot_in_background() if lead else None  # for curves.png at the end
    try:
        return _train_in(args, out, lease, ds, net, opt, mesh, lead)
    finally:
        if importing is not None:
            importing.join()
        if lease is not None:
            lease.release()


def write_outputs(run_dir, history: dict, quiet: bool) -> None:
    """history.json and curves.png (:func:`fnet.runs.write_outputs`), with a note when matplotlib
    is missing for the curves."""
    from fnet import runs

    records = history.get("epoch", history.get("step"))
    if runs.CURVES_NAME not in runs.write_outputs(run_dir, history) and records and not quiet:
        print(f"note: matplotlib is not installed, so {runs.CURVES_NAME} was not written (pip install 'fnet[plot]')")


def replace_run(args, lease, fit, first: int, total: int, progress_line):
    """``--overwrite``: the new run's first ``first`` units (epochs, or a language model's steps)
    go to the lease's staging folder; once its checkpoint is written there,
    :meth:`fnet.runs.Lease.commit` swaps the new run in place of the old one, and the rest, up to
    ``total``, resumes from that checkpoint in the run folder (bit for bit what one call computes).
    Until the swap the old run stays as it was, whatever happens. ``fit(n, checkpoint_dir=,
    resume=, progress=)`` trains to ``n`` units; ``progress_line(record, total)`` formats the first
    part's last record, printed once the swap is done."""
    from fnet import distributed

    done = fit(first, checkpoint_dir=lease.folder if lease is not None else args.out, resume=False, progress=False)
    if lease is not None:
        lease.commit()
    distributed.barrier("fnet train --overwrite: the new run is in place")  # before any process reads it back
    if not args.quiet:
        print(progress_line({k: v[-1] for k, v in done.history.items()}, total), flush=True)
    if first >= total:
        return done
    return fit(total, checkpoint_dir=args.out, resume=True, progress=not args.quiet)


def _train_in(args, out, lease, ds, net, opt, mesh, lead: bool) -> int:
    import functools

    from fnet import history, nets, runs, train

    regression = ds.num_classes == 0
    if not args.quiet:
        verb = "resuming" if args.resume else "training"
        print(f"{verb} {net.name} ({nets.num_params(net):,} parameters) on {ds.name} ({len(ds.x_train)} train / "
              f"{len(ds.x_val)} val / {len(ds.x_test)} test) with {args.optimizer} lr {args.lr}, {args.grad} gradients "
              f"-> {out}")
    val = (ds.x_val, ds.y_val) if len(ds.x_val) else None
    fit = functools.partial(
        train.fit, net, opt, ds.x_train, ds.y_train, val=val, batch_size=args.batch_size, seed=args.seed,
        grad=args.grad, early_stopping=args.early_stopping, mesh=mesh,
        print_fn=lambda line: print(line, flush=True),  # each epoch's line as it ends, also into a pipe
    )
    try:
        if args.overwrite:
            result = replace_run(args, lease, lambda n, **options: fit(epochs=n, **options), 1, args.epochs,
                                 history.progress_line)
        else:
            result = fit(epochs=args.epochs, checkpoint_dir=out, resume=args.resume, progress=not args.quiet)
    except train.TrainingDiverged as e:
        if lead and (lease is None or lease.replaces is None):  # never into a run not yet replaced
            write_outputs(out, e.history, args.quiet)
        raise
    if not lead:
        return 0
    if args.resume and result.epochs_run == 0:  # finished before
        done = len(result.history["epoch"])
        how = "stopped early" if result.stopped_early else f"all {args.epochs} epochs done"
        missing = runs.missing_outputs(out)
        print(f"run {out} already finished ({done} epochs, {how}); nothing to train"
              + (f"; regenerating {', '.join(missing)}" if missing else "; its outputs are all present"))
        if runs.HISTORY_NAME in missing or runs.CURVES_NAME in missing:
            write_outputs(out, result.history, args.quiet)
        if runs.RESULTS_NAME not in missing:
            return 0
    else:
        write_outputs(out, result.history, args.quiet)
    test = train.evaluate(net, result.best_params, result.best_state, ds.x_test, ds.y_test)
    runs.write_results(out, {"best_epoch": result.best_epoch, "test": test})
    metric = f"test loss {test['loss']:.4f}" if regression else f"test accuracy {100 * test['accuracy']:.2f}%"
    print(f"{metric} (params of epoch {result.best_epoch}, best on validation); run saved in {out}")
    return 0


def evaluate(args, run) -> int:
    """``fnet evaluate`` of a run of a network trained by epochs: its test accuracy (test loss for a
    regression) with the best parameters."""
    from fnet import runs, train

    try:
        ds = load_data(run.options, args.data_dir or run.data_dir)
        net, opt = build_run(run.options, ds)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"evaluate: {run.config_path} does not describe a run fnet can rebuild: {e}") from None
    runs.check_net(run, net.config)
    params, state = runs.load_best(run, net, opt)
    test = train.evaluate(net, params, state, ds.x_test, ds.y_test)
    if ds.num_classes == 0:
        print(f"{args.run_dir}: test loss {test['loss']:.4f} on {len(ds.x_test)} {ds.name} samples")
    else:
        print(f"{args.run_dir}: test accuracy {100 * test['accuracy']:.2f}% on {len(ds.x_test)} {ds.name} samples")
    return 0


def add_parser(sub) -> None:
    """``fnet train``'s options."""
    from fnet import models  # the model names for the help (after main's interrupt handler)

    p = sub.add_parser("train", help="train a network (default: an MLP on digits, manual gradients, Adam)",
                       description="Train a network. Options left out take their defaults, or, with --resume, "
                                   "the values stored in the run's config.json.")
    p.add_argument("--data", help="digits (default, bundled), mnist, fashion-mnist, spiral, planar, sin, linear; "
                                  "shakespeare (bundled text: the language models' default)")
    p.add_argument("--data-dir", help="folder with the MNIST/Fashion-MNIST files (else $FNET_DATA, then ~/.cache/fnet)")
    p.add_argument("--model", help=f"the network: {', '.join(models.MODELS)} (default mlp; the CNNs take images; "
                                   "lstm, rnn, gru and gpt are character language models, trained by --steps on "
                                   "--data shakespeare (their default); cnn: the old name of small_cnn)")
    p.add_argument("--hidden", type=_sizes("--hidden"),
                   help="hidden sizes of the MLP, e.g. 100,100 (default); a language model's layers, one width per "
                        "layer: recurrent (default 512) or transformer blocks (default 128,128,128,128)")
    p.add_argument("--filters", type=_sizes("--filters"),
                   help="a CNN's convolution widths, e.g. 32,64 (default: the model's); refused for --model mlp")
    p.add_argument("--dense-width", type=_positive("--dense-width"),
                   help="a CNN's width of its dense layer before the scores, e.g. 128 (default: the model's); "
                        "refused for --model mlp")
    p.add_argument("--activation", choices=ACTIVATIONS,
                   help="the MLP's activation (default relu); the CNNs' layers are fixed (ReLU) and refuse another")
    p.add_argument("--norm", choices=NORMS,
                   help="the MLP's normalization (default none); the CNNs' layers are fixed (batch norm in small_cnn) "
                        "and refuse it")
    p.add_argument("--dropout", type=float,
                   help="drop probability of hidden units (default: 0.1 on digits, 0.25 for a recurrent language model, "
                        "else 0)")
    p.add_argument("--weight-decay", type=float,
                   help="L2 lambda on weights (AdamW: decoupled decay); default 0 (0.1 for the GPT)")
    p.add_argument("--init", type=_parse_init, help="he (default), xavier, normal, zeros, or a float std")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam (adamw for the GPT)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3; 2e-3 for a language model)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="constant (default); step: lr * lr_decay**epoch (cs231n); exponential: smooth per-step "
                        "version; cosine: to 0")
    p.add_argument("--lr-decay", type=float, help="per-epoch decay factor in (0, 1] for step/exponential (default 0.95)")
    p.add_argument("--epochs", type=int, help="default: 60 on digits, 10 on (fashion-)mnist, else 30")
    p.add_argument("--steps", type=int, help="a language model's optimizer steps (default 3600; 11000 for the GPT)")
    p.add_argument("--context", type=int, help="a language model's window length in characters (default 128)")
    p.add_argument("--embed", type=int, help="a language model's embedding width (default 64)")
    p.add_argument("--heads", type=int, help="the GPT's attention heads per block (default 4; they divide its width)")
    p.add_argument("--tie", action="store_true", default=None,
                   help="the GPT's output layer is its token table transposed (weight tying)")
    p.add_argument("--warmup", type=int, metavar="STEPS",
                   help="a language model's steps of linear warmup before its schedule (default: 100 for the GPT, "
                        "else 0)")
    p.add_argument("--beta2", type=float, help="Adam's and AdamW's second-moment decay (default 0.999; 0.99 for the GPT)")
    p.add_argument("--eval-every", type=int, metavar="STEPS",
                   help="a language model's steps between validation estimates and checkpoints (default 100)")
    p.add_argument("--clip", type=float,
                   help="clip the gradients to this global norm before the update (default: 1.0 for a language "
                        "model, else 0: no clipping)")
    p.add_argument("--batch-size", type=int,
                   help="default: 32 on digits, 128 on (fashion-)mnist, 32 for a recurrent language model, 16 for the "
                        "GPT, else 64")
    p.add_argument("--early-stopping", type=int, metavar="EPOCHS",
                   help="stop after this many epochs without a better validation accuracy")
    p.add_argument("--grad", choices=["manual", "autodiff"], help="default manual (the hand-written backward pass)")
    p.add_argument("--seed", type=int, help="0 <= seed < 2**63 (default 0)")
    p.add_argument("--out", help="run directory (default runs/<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (only an fnet run folder); the old run stays until the new one's "
                        "first checkpoint is written")
    p.add_argument("--device", choices=["cpu", "gpu"], help="JAX device (default: JAX's default)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the devices of several processes: jax.distributed.initialize from "
                        "$FNET_COORDINATOR_ADDRESS, $FNET_NUM_PROCESSES, $FNET_PROCESS_ID (or SLURM etc.); see docs/scale_out.md")
    p.set_defaults(func=train)
