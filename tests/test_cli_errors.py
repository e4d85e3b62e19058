"""A user's mistake at the command line is one line (``error: …``, exit 2), never a traceback."""
import pytest

from clamu_helpers.__main__ import main

BAD = [
    (["audit", "--method", "nosuch"], "unknown method 'nosuch'; available: "),
    (["audit", "--setting", "nosuch"], "unknown setting 'nosuch'; available: "),
    (["audit", "--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["audit", "--param", "alfa=1"], "method 'merge' has no parameter 'alfa'; its parameters: alpha"),
    (["audit", "--param", "alpha=-1"], "alpha must be a positive number"),
    (["audit", "--method", "clamu", "--param", "search=grid"], "search must be one of"),
    (["audit", "--param", "alpha"], "--param expects KEY=VALUE, got 'alpha'"),
    (["reproduce", "--only", "fig99"], "--only: unknown target 'fig99'"),
    (["reproduce", "--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["receipts", "/nonexistent/system"], "no saved state at /nonexistent/system"),
    (["verify", "/nonexistent/system"], "no saved state at /nonexistent/system"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    if argv[0] == "reproduce":
        argv = argv + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
