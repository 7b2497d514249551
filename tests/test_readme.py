"""The README's example runs as written and prints what the README says it prints (a passing
three-way gradient check and a trained network), and its Quick start is the two commands that
CI runs."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_ten_line_example_runs_and_prints_a_passing_check_and_an_accuracy():
    (code,) = re.findall(r"```python\n(.*?)```", _section("The library in ten lines"), flags=re.S)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})
    out = printed.getvalue()
    assert re.search(r"^residual block .* PASS$", out, flags=re.M), out
    accuracy = float(re.search(r"'accuracy': ([0-9.]+)", out).group(1))
    assert accuracy > 0.9, out


def _run_example(section: str, check: str) -> float:
    """Run the first Python block of ``section``; it prints a passing three-way check named
    ``check`` and, last, a validation loss, which is returned."""
    code = re.findall(r"```python\n(.*?)```", _section(section), flags=re.S)[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})
    out = printed.getvalue()
    assert re.search(rf"^{check} .* PASS$", out, flags=re.M), out
    return float(out.strip().splitlines()[-1])


def test_the_language_model_example_runs_and_prints_a_passing_check_and_a_validation_loss():
    # 300 steps from log(65) = 4.17 nats/char (the README shows 2.31)
    assert _run_example("Language models", "2-layer LSTM LM") < 2.6


def test_the_transformer_example_runs_and_prints_a_passing_check_and_a_validation_loss():
    # 300 steps from log(65) = 4.17 nats/char (the README shows 2.30)
    assert _run_example("Transformers", "transformer block") < 2.6


def test_the_quick_start_is_the_two_commands_ci_runs():
    commands = re.findall(r"```bash\n(.*?)```", _section("Quick start"), flags=re.S)[0]
    assert 'pip install -e ".[plot]" && fnet train' in commands
    assert 'pip install -e ".[dev]" && python -m pytest' in commands
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert 'install -e ".[plot]"' in ci and '/bin/fnet" train' in ci and "python -m pytest" in ci
