"""Figures shared by the command line and the experiments (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import logging
import math
import threading

from fnet import compile_cache, files


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, or None if matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class _CacheWarningsToNote(logging.Filter):
    """matplotlib reads its style files inside ``warnings.catch_warnings(record=True)``, which is
    process-wide: a JAX cache-entry warning raised meanwhile by a compilation in the main thread
    lands in matplotlib's list, and it logs it as "In <style file>: ...". This filter turns such a
    record back into fnet's one note (:func:`fnet.compile_cache.report_bad_entry`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not compile_cache.report_bad_entry(record.getMessage())


def import_pyplot_in_background() -> threading.Thread:
    """Run :func:`pyplot` (the matplotlib import, ~1 s) in a started thread and return it.

    ``fnet train`` starts it before training: compiling releases the GIL, so the import overlaps
    with it and the figure at the end does not wait for it. Join the thread before exiting.
    """
    style_log = logging.getLogger("matplotlib.style")
    if not any(isinstance(f, _CacheWarningsToNote) for f in style_log.filters):
        style_log.addFilter(_CacheWarningsToNote())
    thread = threading.Thread(target=pyplot, name="fnet-import-pyplot", daemon=True)
    thread.start()
    return thread


def save_figure(fig, path, *, dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG through :func:`fnet.files.atomic_open` (never through a
    symlink planted at ``path``, never half-written) and close it."""
    try:
        with files.atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        # pyplot keeps every figure it made alive until closed; a bare Figure has no manager.
        if fig.canvas.manager is not None:
            pyplot().close(fig)


def training_curves(history: dict, path) -> bool:
    """Save loss and accuracy vs epoch (the ``history`` of :func:`fnet.train.fit`) as a PNG; for a
    language model (the ``history`` of :func:`fnet.lm.fit_lm`, by step), loss vs step and the
    validation loss vs wall time.

    Returns:
      False (and writes nothing) when matplotlib is not installed, else True.
    """
    plt = pyplot()
    if plt is None:
        return False
    if "step" in history:
        return _language_model_curves(plt, history, path)
    epochs = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], label="train (minibatch mean)")
    if any(not _isnan(v) for v in history["val_loss"]):
        ax_loss.plot(epochs, history["val_loss"], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    if any(not _isnan(v) for v in history["train_acc"]):
        ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], label="train")
        ax_acc.plot(epochs, [100 * (math.nan if _isnan(a) else a) for a in history["val_acc"]], label="validation")
        ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
        ax_acc.legend()
    else:
        ax_acc.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _language_model_curves(plt, history: dict, path) -> bool:
    fig, (ax_step, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    ax_step.plot(history["step"], history["train_loss"], label="train (mean since the last evaluation)")
    ax_step.plot(history["step"], history["val_loss"], label="validation (cheap estimate)")
    ax_step.set(xlabel="step", ylabel="loss (nats/char)", title="Loss")
    ax_step.legend()
    ax_time.plot([t / 60 for t in history["time"]], history["val_loss"], color="C1")
    ax_time.set(xlabel="wall time (min, compile and evaluation included)", ylabel="validation loss (nats/char)",
                title="Validation loss vs wall time")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
