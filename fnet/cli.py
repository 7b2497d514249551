"""The ``fnet`` command (also ``python -m fnet``).

Errors are printed as one line, ``fnet: error: ...``, with exit status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_gradcheck(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from fnet import gradcheck

    print("Layers and losses (float64): manual backward vs jax.grad vs central differences", flush=True)
    rows = gradcheck.check_layers(seed=args.seed)
    print(gradcheck.format_report(rows, verbose=args.verbose), flush=True)
    print("\nNetworks (float64): mlp.loss_and_grad vs jax.grad(mlp.loss) vs central differences", flush=True)
    net_rows = gradcheck.check_networks(seed=args.seed)
    print(gradcheck.format_report(net_rows, verbose=args.verbose))
    failed = [r.name for r in rows + net_rows if not r.passed]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    print(f"\nall {len(rows) + len(net_rows)} checks passed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fnet", description="Functional neural networks from scratch in JAX.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gradcheck", help="check every hand-written gradient against jax.grad and finite differences")
    p.add_argument("--verbose", "-v", action="store_true", help="one row per parameter leaf")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_gradcheck)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("fnet: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line for the user; --debug shows the traceback
        if args.debug:
            raise
        print(f"fnet: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
