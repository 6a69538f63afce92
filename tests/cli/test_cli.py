"""The ``pulse-trio`` command: help, the entry points, and one line + exit status for every
bad input (bad URL, unreachable server, wrong password, ACL denial, a missing name, a
server that is not Redis)."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pulse_trio
from pulse_trio.cli import _bench, _main, main

COMMANDS = ("demo", "inspect")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("pulse-trio: error: ")
    assert "Traceback" not in err
    return lines[0]


# --- help ----------------------------------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--help")
    assert status == 0
    for command in (*COMMANDS, "bench"):
        assert command in out
    assert "--redis-url" in out
    assert "PULSE_REDIS_URL" in out
    assert "--debug" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command(capsys: pytest.CaptureFixture[str], command: str) -> None:
    status, out, err = _run(capsys, command, "--help")
    assert (status, err) == (0, "")
    assert out.startswith(f"usage: pulse-trio {command}")
    assert "--redis-url" in out
    assert "--debug" in out
    if command == "inspect":
        for option in ("--json", "--values", "--watch", "pools", "streams", "maps"):
            assert option in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys)
    assert status == 2
    assert "usage: pulse-trio" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--version")
    assert (status, out.strip()) == (0, f"pulse-trio {pulse_trio.__version__}")


def test_missing_cli_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real(name)
    )
    status, out, err = _run(capsys, "--help")
    assert (status, out) == (1, "")
    assert err.strip() == _main.MISSING_EXTRA
    assert "pip install 'pulse-trio[cli]'" in err


def test_bench_outside_a_checkout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_bench, "benchmarks_dir", lambda: tmp_path / "benchmarks")
    status, _, err = _run(capsys, "bench", "--scenario", "rmap")
    assert status == 1
    line = _one_error_line(err)
    assert "runs from a source checkout" in line
    assert "pip install -e '.[bench]'" in line


# --- usage errors (exit status 2) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inspect", "--redis-url", "foo://x"), "invalid Redis URL 'foo://x': unsupported URL"),
        (("inspect", "--redis-url", "redis://h:99999"), "invalid port 99999"),
        (("inspect", "--redis-url", "redis://h:nope"), "invalid Redis URL"),
        (("demo", "--redis-url", "http://localhost"), "unsupported URL scheme 'http'"),
        (("inspect",), "inspect needs a Redis server: give --redis-url URL or set"),
        (("inspect", "bogus"), "invalid choice: 'bogus'"),
        (("inspect", "--bogus"), "unrecognized arguments: --bogus"),
        (("inspect", "--watch", "0"), "the period must be positive"),
        (("inspect", "--count", "2", "--redis-url", "redis://x"), "--count N needs --watch"),
        (("nosuch",), "invalid choice: 'nosuch'"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.delenv("PULSE_REDIS_URL", raising=False)
    status, out, err = _run(capsys, *args)
    assert status == 2
    assert message in _one_error_line(err)
    assert out == ""


def test_password_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "inspect", "--redis-url", "redis://u:s3cret@h:99999")
    assert status == 2
    assert "s3cret" not in err
    assert "u:***@h" in err


# --- runtime errors (exit status 1) --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    status, _, err = _run(capsys, "inspect", "--redis-url", f"redis://127.0.0.1:{port}")
    assert status == 1
    assert f"cannot reach Redis at redis://127.0.0.1:{port}" in _one_error_line(err)


def test_url_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    monkeypatch.setenv("PULSE_REDIS_URL", f"redis://127.0.0.1:{port}")
    status, _, err = _run(capsys, "inspect")
    assert status == 1
    assert f"127.0.0.1:{port}" in _one_error_line(err)


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    status, _, err = _run(capsys, "--debug", "inspect", "--redis-url", f"redis://127.0.0.1:{port}")
    assert status == 1
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("pulse-trio: error: cannot reach Redis")


def test_wrong_password(capsys: pytest.CaptureFixture[str], server_url: str) -> None:
    url = server_url.replace("redis://", "redis://nobody:wrong@")
    status, _, err = _run(capsys, "inspect", "--redis-url", url)
    assert status == 1
    line = _one_error_line(err)
    assert "Redis refused the credentials (WRONGPASS" in line
    assert "check the user and password in the URL" in line
    assert "wrong" not in line


@pytest.fixture
def limited_user(server_url: str) -> Iterator[str]:
    """A URL of a user who may not run SCAN (an ACL denial), removed afterwards."""
    admin_cmd = ["redis-cli", "-u", server_url]
    user = "cli-limited"
    subprocess.run(
        [*admin_cmd, "ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-scan"],
        check=True,
        capture_output=True,
    )
    try:
        yield server_url.replace("redis://", f"redis://{user}:pw@")
    finally:
        subprocess.run([*admin_cmd, "ACL", "DELUSER", user], check=True, capture_output=True)


def test_acl_denial(capsys: pytest.CaptureFixture[str], limited_user: str) -> None:
    status, _, err = _run(capsys, "inspect", "maps", "--redis-url", limited_user)
    assert status == 1
    line = _one_error_line(err)
    assert "Redis denied a command to this user (ACL)" in line
    assert "'scan'" in line


@pytest.mark.parametrize("kind", ["pools", "streams", "maps"])
def test_missing_name(capsys: pytest.CaptureFixture[str], server_url: str, kind: str) -> None:
    status, out, err = _run(capsys, "inspect", kind, "nosuch", "--redis-url", server_url)
    assert (status, out) == (1, "")
    assert _one_error_line(err) == (
        f"pulse-trio: error: no {kind[:-1]} named 'nosuch' ('pulse-trio inspect {kind}' lists them)"
    )


@contextlib.contextmanager
def _tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A local TCP server running ``handle`` per connection; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def _http(conn: socket.socket) -> None:
    with conn:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (_http, "the server does not speak the Redis protocol"),
        (_echo, "is not a Redis server: it answered PING with [b'PING']"),
    ],
    ids=["http", "echo"],
)
def test_not_a_redis_server(
    capsys: pytest.CaptureFixture[str], handler: Callable[[socket.socket], None], message: str
) -> None:
    with _tcp_server(handler) as port:
        status, _, err = _run(capsys, "inspect", "--redis-url", f"redis://127.0.0.1:{port}")
    assert status == 1
    line = _one_error_line(err)
    assert f"redis://127.0.0.1:{port}" in line
    assert message in line


# --- the entry points ----------------------------------------------------------------------


def test_python_m_pulse_trio() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulse_trio", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: pulse-trio" in done.stdout
    assert "bench" in done.stdout


def test_console_script_reports_errors_without_traceback() -> None:
    script = Path(sys.executable).with_name("pulse-trio")
    if not script.exists():
        pytest.skip(f"no pulse-trio script next to {sys.executable} (package not installed)")
    done = subprocess.run(
        [str(script), "inspect", "--redis-url", f"redis://127.0.0.1:{_free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert _one_error_line(done.stderr).startswith("pulse-trio: error: cannot reach Redis")


def test_ctrl_c_ends_watch_quietly(server_url: str) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pulse_trio",
            "inspect",
            "--watch",
            "0.1",
            "--redis-url",
            server_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A child of a non-interactive shell may inherit SIGINT ignored: restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as watch:
        assert watch.stdout is not None
        assert watch.stdout.readline().startswith("taken at")  # it is refreshing
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    assert watch.returncode == 130
    assert err == ""
