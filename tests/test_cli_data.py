"""``fnet data download``: a mirror that cannot be reached is named in one line, and nothing is
written."""

from _cli_helpers import one_line_error

from fnet import cli, data


def test_data_download_from_an_unreachable_mirror(tmp_path, capsys, monkeypatch):
    # Port 9 (discard) on the loopback: the connection is refused at once, no real network used.
    monkeypatch.setitem(data.MIRRORS, "mnist", ("http://127.0.0.1:9/",))
    cache = tmp_path / "cache"
    assert cli.main(["data", "download", "mnist", "--cache-dir", str(cache)]) == 2
    line = one_line_error(capsys)
    assert "could not get train-images-idx3-ubyte.gz" in line and "http://127.0.0.1:9/" in line
    assert "Nothing was written" in line and str(cache / "mnist") in line
    assert not (cache / "mnist").exists()
