"""The hyperparameter-search experiment in quick mode (real MNIST; skipped without $FNET_DATA)."""

import json

import numpy as np
import pytest

from fnet.experiments import hyperparameter_search as hs


def test_quick_search(shared_data_dir, tmp_path):
    result = json.loads(json.dumps(hs.run(quick=True, data_dir=shared_data_dir)))  # JSON-serialisable
    assert hs.NAME == "hyperparameter-search" and "\n" not in hs.DESCRIPTION
    first, second = result["rounds"]
    assert len(first["trials"]) == hs.QUICK["num_trials"] and len(first["trials"][0]["val_acc"]) == hs.QUICK["epochs"]
    for rnd in result["rounds"]:
        scores = [t["final_val_acc"] for t in rnd["trials"]]
        assert scores == sorted(scores, reverse=True)
    # What the source teaches: with SGD and a short budget the good trials have learning rates in
    # the upper part of 10**U(-6, -2); weight decay hardly matters at these values.
    lrs = np.array([t["hparams"]["learning_rate"] for t in first["trials"][:3]])
    assert np.all(lrs > 1e-4), lrs
    # The second round searches the narrowed ranges.
    lo, hi, _ = second["ranges"]["learning_rate"]
    assert 1e-6 <= lo <= hi <= 1e-2 and np.log10(hi / lo) < 4
    text = hs.summary(result)
    assert "round 2" in text and "learning_rate" in text
    pytest.importorskip("matplotlib")
    hs.plot(result, tmp_path / "hs.png")
    assert (tmp_path / "hs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
