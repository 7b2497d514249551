"""fnet.history: a training history is written as JSON with NaN as null."""

import json
import math

from fnet import history


def test_save_history_writes_nan_as_null(tmp_path):
    path = tmp_path / "history.json"
    history.save_history(path, {"epoch": [1, 2], "val_acc": [math.nan, 0.5]})
    assert json.loads(path.read_text()) == {"epoch": [1, 2], "val_acc": [None, 0.5]}
