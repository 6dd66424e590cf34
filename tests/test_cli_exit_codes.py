"""Every command, table-driven: a usage error (unknown option, missing option, malformed number, unknown command)
and a value that parses but is wrong both exit 2 with a short message, never a traceback or "internal error"; bare
`slmrec` prints the help and exits 0."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

NOWHERE = "/nonexistent/slmrec-test"
CASES = {
    "prepare": (["--bogus"], ["--k-core", "abc"], ["--dataset", "ml-100k", "--input", NOWHERE, "--format", "csv"]),
    "pretrain-ids": (["--out", "x"], ["--data", "d", "--out", "x", "--epochs", "abc"],
                     ["--data", NOWHERE, "--out", NOWHERE + "/run", "--dim", "0"]),
    "train-teacher": (["--data", "d", "--out", "x"], ["--data", "d", "--ids", "i", "--out", "x", "--lora-r", "x"],
                      ["--data", NOWHERE, "--ids", NOWHERE, "--out", NOWHERE + "/t", "--lr", "-1"]),
    "distill": (["--out", "x"], ["--teacher", "t", "--out", "x", "--blocks", "x"],
                ["--teacher", NOWHERE, "--out", NOWHERE + "/s", "--lambda-cos", "-1"]),
    "prune-probe": ([], [NOWHERE, "--eval-batch", "x"], [NOWHERE]),
    "export": (["--bogus"], ["--threads", "x"], ["--run", NOWHERE, "--quantize", "int3"]),
    "recommend": (["--history", "1"], ["--export", "m", "--k", "x"],
                  ["--export", NOWHERE, "--history", "1", "--k", "0"]),
    "evaluate": (["--bogus"], ["--eval-batch", "x"], ["--split", "nope", NOWHERE]),
    "report": ([], ["--bogus"], [NOWHERE]),
}


@pytest.mark.parametrize("command", sorted(CASES))
@pytest.mark.parametrize("case", ["usage", "malformed", "wrong value"])
def test_bad_input_exits_2(command, case, capsys):
    args = CASES[command][("usage", "malformed", "wrong value").index(case)]
    code, out, err = run_cli([command, *args], capsys)
    assert code == 2, f"{command} {args}: exit {code}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert 1 <= len([line for line in err.splitlines() if line.strip()]) <= 4, err  # usage, error, hint at most


def test_unknown_command_and_bare_slmrec(capsys):
    code, _, err = run_cli(["nosuch"], capsys)
    assert code == 2 and "No such command" in err
    code, out, err = run_cli([], capsys)
    assert code == 0 and "Commands" in out + err and "internal error" not in err
