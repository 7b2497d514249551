"""The ``fnet`` command (run through :mod:`fnet.__main__`, also as ``python -m fnet``): the parser,
``main`` and the small commands; ``fnet train`` is :mod:`fnet.cli_train` (a language model's run:
:mod:`fnet.cli_lm`, which also holds ``fnet sample``).

Errors are printed as one line, ``fnet: error: ...``, with exit status 2; ``--debug`` shows the
traceback instead. Ctrl-C prints ``fnet: interrupted`` and exits with status 130, at any moment
(:mod:`fnet.interrupt`). Nothing here imports jax at module level, so that :func:`main` sets the
interrupt handler (for a caller of ``main`` in its own program too) before the slow jax import.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from fnet import compile_cache, interrupt

def _cmd_gradcheck(args) -> int:
    import jax

    from fnet import gradcheck, limits

    limits.check_seed("--seed", args.seed)  # before the header: one line, naming the option
    jax.config.update("jax_enable_x64", True)

    sections = [
        ("Layers (leaf modules) and losses", gradcheck.check_layers, "module.backward"),
        ("Combinators", gradcheck.check_combinators, "the derived backward"),
        ("Networks", gradcheck.check_networks, "net.loss_and_grad"),
    ]
    rows = []
    for title, check, manual in sections:
        print(f"{title} (float64): {manual} vs jax.grad vs central differences", flush=True)
        section = check(seed=args.seed)
        print(gradcheck.format_report(section, verbose=args.verbose) + "\n", flush=True)
        rows += section
    failed = [r.name for r in rows if not r.passed]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print(f"all {len(rows)} checks passed")
    return 0


def _cmd_evaluate(args) -> int:
    from fnet import cli_lm, cli_train, runs

    run = runs.load(args.run_dir)
    try:
        cli_train.check_options(run.options)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"evaluate: {run.config_path} does not describe a run fnet can rebuild: {e}") from None
    return (cli_lm if cli_train.is_language_model(run.options.model) else cli_train).evaluate(args, run)


def _cmd_data_download(args) -> int:
    from fnet import data

    folder = data.download(args.name, cache_dir=args.cache_dir, log=print)
    print(f"{args.name}: files verified in {folder}")
    return 0


def _cmd_experiment(args) -> int:
    import time

    from fnet import experiments, files, plots

    if args.list or not args.name:
        for name, mod in experiments.registry().items():
            print(f"{name:<24} {mod.DESCRIPTION}")
        return 0
    mod = experiments.get(args.name)
    json_path, png_path = experiments.check_outputs(args.out, args.name)
    t0 = time.perf_counter()
    result = mod.run(quick=args.quick, data_dir=args.data_dir)
    elapsed = time.perf_counter() - t0
    files.write_json(json_path, result)
    experiments.record_outputs(args.out, json_path)
    print(mod.summary(result))
    if plots.pyplot() is None:
        print(f"note: matplotlib is not installed, so {png_path} was not written (pip install 'fnet[plot]')")
    else:
        mod.plot(result, png_path)
        experiments.record_outputs(args.out, png_path)
        print(f"wrote {json_path} and {png_path} ({elapsed:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fnet import cli_lm, cli_train  # after main's interrupt handler: they import the model registry

    parser = argparse.ArgumentParser(prog="fnet", description="Functional neural networks from scratch in JAX.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not use the persistent compilation cache (also: FNET_COMPILE_CACHE=0); see fnet.compile_cache")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gradcheck", help="check every hand-written gradient against jax.grad and finite differences")
    p.add_argument("--verbose", "-v", action="store_true", help="one row per parameter leaf")
    p.add_argument("--seed", type=int, default=0, help="0 <= seed < 2**63 (default 0)")
    p.set_defaults(func=_cmd_gradcheck)

    cli_train.add_parser(sub)

    p = sub.add_parser("evaluate", help="re-load a run directory and print its test accuracy (a language model's "
                                            "validation loss)")
    p.add_argument("run_dir")
    p.add_argument("--data-dir", help="folder with the data files, if not where the run found them")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("sample", help="generate text from a language-model run (fnet train --model lstm|rnn|gru)")
    p.add_argument("run_dir")
    p.add_argument("--prompt", default=cli_lm.SAMPLE_PROMPT, help="the text to continue (default: a new line)")
    p.add_argument("--length", type=int, default=cli_lm.SAMPLE_LENGTH,
                   help=f"characters to generate (default {cli_lm.SAMPLE_LENGTH})")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divide the scores by this before sampling: below 1 more likely characters, 0 greedy (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="0 <= seed < 2**63 (default 0)")
    p.set_defaults(func=cli_lm.sample)

    p = sub.add_parser("data", help="manage data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("download", help="fetch MNIST or Fashion-MNIST with sha256 checks into the cache")
    q.add_argument("name", choices=["mnist", "fashion-mnist"])
    q.add_argument("--cache-dir", help="default ~/.cache/fnet")
    q.set_defaults(func=_cmd_data_download)

    p = sub.add_parser("experiment", help="run one of the curriculum's experiments (--list shows them)")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.add_argument("--out", default="experiments", help="folder for NAME.json and NAME.png (default ./experiments)")
    p.add_argument("--quick", action="store_true", help="a scaled-down run (seconds)")
    p.add_argument("--data-dir", help="folder with the MNIST files (else $FNET_DATA, then ~/.cache/fnet)")
    p.set_defaults(func=_cmd_experiment)
    return parser


def main(argv=None) -> int:
    # First of all (before jax is imported): Ctrl-C must never give a traceback or a crash.
    # (Only the main thread may set handlers; a caller on another thread keeps its own.)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = interrupt.install() if main_thread else None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            if args.command != "data" and not args.no_compile_cache and compile_cache.wanted():
                compile_cache.enable()
            return args.func(args)
        except Exception as e:  # noqa: BLE001 - one clear line for the user; --debug shows the traceback
            if args.debug:
                raise
            # One line: a multi-line message (e.g. the folders searched for a data set) is joined.
            message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
            print(f"fnet: error: {message}", file=sys.stderr)
            return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
