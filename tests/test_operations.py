"""What an operator sees: `status` (text and the JSON contract), the run history's invocation
and trigger, JSON log lines that carry them, a progress bar on a terminal only, and no secret
in any log line."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import termios
import subprocess
import sys
import time

from tests.conftest import KEY, ROOT, cli_env, run_cli


def test_status_json_is_the_documented_contract(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url)
    assert run_cli(["sync"], env).returncode == 0
    sim.faults.add("503", count=10_000, resource="form")
    assert run_cli(["sync"], {**env, "RETRY_MAX_SECONDS": "0.2"}).returncode == 1
    sim.faults.clear()
    sim.add_cases("demo", 4)
    result = run_cli(["status", "--json", "--hq"], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["version"] == 1 and report["schema"] == schema
    streams = {(e["domain"], e["stream"]): e for e in report["streams"]}
    assert set(streams) == {("demo", "apps"), ("demo", "cases"), ("demo", "forms")}
    cases, forms = streams[("demo", "cases")], streams[("demo", "forms")]
    for entry in streams.values():
        assert {"checkpoint", "checkpoint_moved_at", "indexed_on", "hq_server", "last_run",
                "last_success_at", "dead_letters"} <= set(entry)
        assert entry["hq_server"] == sim.base_url
    assert cases["last_run"]["status"] == "ok" and cases["hq_newer"] >= 4
    assert cases["behind_seconds"] > 0
    assert forms["last_run"]["status"] == "failed" and "503" in forms["last_run"]["error"]
    assert forms["last_success_at"] is not None  # the first sync
    text = run_cli(["status"], env).stdout
    assert "demo\tforms" in text and "failed" in text
    assert run_cli(["status", "--healthy"], env).returncode == 1  # the forms run failed
    assert run_cli(["sync"], env).returncode == 0
    assert run_cli(["status", "--healthy"], env).returncode == 0


def test_the_streams_of_one_command_share_an_invocation_and_say_what_triggered_them(
        sim, schema, pg_url, db):
    env = cli_env(sim.base_url, schema, pg_url, PARALLEL_STREAMS="2", LOG_FORMAT="json")
    result = run_cli(["sync"], env)
    assert result.returncode == 0, result.stderr[-1500:]
    assert run_cli(["backfill", "--resource", "cases"], env).returncode == 0
    runs = db.execute(f'select command, stream, invocation, trigger from "{schema}".sync_runs '
                      f'order by id').fetchall()
    syncs = [r for r in runs if r[0] == "sync"]
    assert len(syncs) == 3 and len({r[2] for r in syncs}) == 1 and {r[3] for r in syncs} == {"manual"}
    (backfill,) = [r for r in runs if r[0] == "backfill"]
    assert backfill[3] == "backfill" and backfill[2] != syncs[0][2]
    # Every JSON line of the sync carries the invocation; a stream's summary its counts too.
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {line.get("invocation") for line in lines} == {syncs[0][2]}
    summaries = [line for line in lines if "records" in line and "stream" in line]
    assert {s["stream"] for s in summaries} == {"apps", "cases", "forms"}
    assert all(s["domain"] == "demo" and s["status"] == "ok" for s in summaries)


def _run_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = subprocess.Popen([sys.executable, "-m", "etl", *args], env=env, cwd=ROOT,
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=10), output.decode(errors="replace")


def test_a_progress_bar_on_a_terminal_and_plain_lines_elsewhere(sim_factory, schema, pg_url):
    sim = sim_factory(n_cases=200)
    env = cli_env(sim.base_url, schema, pg_url, CASE_PAGE_SIZE="50", STREAMS="cases")
    code, screen = _run_on_a_terminal(["sync"], env)
    assert code == 0, screen[-2000:]
    assert "cases [demo]" in screen and "records/s" in screen and "100%" in screen
    piped = run_cli(["sync"], {**env, "STREAMS": "forms"})
    assert piped.returncode == 0 and "records/s]" not in piped.stderr and "\r" not in piped.stderr


def test_no_secret_reaches_a_log_line(sim, schema, pg_url):
    secret_db = pg_url  # the test database has no password; the API key is the secret here
    env = cli_env(sim.base_url, schema, pg_url, LOG_LEVEL="DEBUG")
    sim.faults.add("503", count=2)
    for args in (["sync"], ["status", "--hq"], ["sync", "--log-format", "json"]):
        result = run_cli(args, env)
        assert KEY not in result.stderr and KEY not in result.stdout, args
    bad = run_cli(["sync"], {**env, "COMMCARE_API_KEY": "wrong-" + KEY})
    assert bad.returncode == 3 and KEY not in bad.stderr
    assert secret_db  # (a password in DATABASE_URL is masked wherever the URL is shown)
