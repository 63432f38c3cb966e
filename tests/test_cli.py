"""The CLI as an operator meets it: exit codes and one clear line on failure."""

from __future__ import annotations

import pytest

from etl.errors import ExitCode
from tests.conftest import cli_env, run_cli, run_cli_patched


def test_sync_succeeds_and_says_what_it_did(sim, schema, pg_url, db):
    result = run_cli(["sync"], cli_env(sim.base_url, schema, pg_url))
    assert result.returncode == ExitCode.OK, result.stderr
    assert "sync cases [demo]: ok" in result.stderr
    assert "sync forms [demo]: ok" in result.stderr
    assert "sync finished" in result.stderr
    status = run_cli(["status"], cli_env(sim.base_url, schema, pg_url))
    assert status.returncode == 0 and "demo\tcases" in status.stdout


def test_bad_credentials_fail_at_once_with_exit_3(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_API_KEY="wrong")
    result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.AUTH
    assert "401" in result.stderr and "COMMCARE_API_KEY" in result.stderr
    assert len([r for r in sim.requests if r.status == 401]) == 1  # no retrying a refusal


def test_missing_settings_are_a_configuration_error(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url)
    del env["COMMCARE_DOMAIN"], env["COMMCARE_API_KEY"]
    result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.CONFIG
    assert "COMMCARE_DOMAIN" in result.stderr and "COMMCARE_API_KEY" in result.stderr


@pytest.mark.parametrize("name, value, needle", [
    ("CASE_PAGE_SIZE", "9000", "CASE_PAGE_SIZE"),
    ("DATABASE_URL", "mysql://x@y/z", "DATABASE_URL"),
    ("CASE_API", "v3", "CASE_API"),
])
def test_invalid_settings_name_the_setting(sim, schema, pg_url, name, value, needle):
    result = run_cli(["sync"], cli_env(sim.base_url, schema, pg_url, **{name: value}))
    assert result.returncode == ExitCode.CONFIG
    assert needle in result.stderr


def test_unreachable_database_is_a_clear_error(sim, schema):
    env = cli_env(sim.base_url, schema, "postgresql://nobody:s3cret@127.0.0.1:1/nowhere")
    result = run_cli(["migrate"], env)
    assert result.returncode == ExitCode.CONFIG
    assert ("cannot connect to the warehouse database (postgresql://nobody:***@127.0.0.1:1/"
            "nowhere)") in result.stderr
    assert "s3cret" not in result.stderr


def test_settings_file_under_config_is_read(sim, schema, pg_url, tmp_path):
    config = tmp_path / "commcare-etl.toml"
    config.write_text('commcare_domain = "demo"\nstreams = "cases"\n')
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_ETL_CONFIG=str(config))
    del env["COMMCARE_DOMAIN"], env["STREAMS"]
    result = run_cli(["sync"], env)
    assert result.returncode == 0, result.stderr
    assert "sync cases [demo]: ok" in result.stderr and "sync forms" not in result.stderr


def test_a_dotenv_file_in_the_working_directory_is_read(sim, schema, pg_url, tmp_path):
    env = cli_env(sim.base_url, schema, pg_url, STREAMS="forms")
    (tmp_path / ".env").write_text(f"COMMCARE_API_KEY={env.pop('COMMCARE_API_KEY')}\n")
    result = run_cli(["sync"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sync forms [demo]: ok" in result.stderr


def test_simulate_serves_hq_until_stopped():
    import socket
    import subprocess
    import sys
    import time

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "etl", "simulate", "--port", str(port),
                             "--cases", "30"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                r = requests.get(f"http://127.0.0.1:{port}/a/demo/api/v0.5/case/",
                                 headers={"Authorization": "ApiKey demo@example.org:demo-key"},
                                 timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["meta"]["total_count"] == 30
    finally:
        proc.terminate()
        proc.wait(10)


def test_status_only_reads_and_says_when_there_is_nothing(sim, schema, pg_url):
    import psycopg

    env = cli_env(sim.base_url, schema, pg_url)
    result = run_cli(["status"], env)
    assert result.returncode == 0, result.stderr
    assert "no commcare-etl tables" in result.stdout
    with psycopg.connect(pg_url) as conn:
        exists = conn.execute("select count(*) from pg_namespace where nspname = %s", (schema,))
        assert exists.fetchone()[0] == 0  # status created nothing


def test_reset_waits_for_a_running_sync_then_forgets_the_checkpoint(sim, schema, pg_url, db):
    import subprocess
    import sys
    import time

    import psycopg

    env = cli_env(sim.base_url, schema, pg_url)
    assert run_cli(["sync", "--stream", "cases"], env).returncode == 0
    holder = psycopg.connect(pg_url, autocommit=True)  # a sync of cases, as far as locks go
    holder.execute("select pg_advisory_lock(hashtext(%s))",
                   (f"commcare-etl:{schema}:demo:cases:sync",))
    try:
        quick = run_cli(["reset", "--resource", "cases", "--wait", "0.5"], env)
        assert quick.returncode == 4, quick.stderr
        proc = subprocess.Popen([sys.executable, "-m", "etl", "reset", "--resource", "cases",
                                 "--wait", "30"], env=env, stderr=subprocess.PIPE, text=True)
        said = []
        for line in proc.stderr:  # until it says it waits (or ends: the lock is bounded, 30 s)
            said.append(line)
            if "waiting" in line:
                break
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting
    finally:
        holder.close()
    _, rest = proc.communicate(timeout=30)
    stderr = "".join(said) + rest
    assert proc.returncode == 0, stderr
    assert "waiting" in stderr
    left = db.execute(f"select count(*) from \"{schema}\".sync_checkpoints "
                      f"where stream = 'cases'").fetchone()[0]
    assert left == 0


def test_a_checkpoint_belongs_to_the_hq_server_it_was_read_from(sim_factory, schema, pg_url, db):
    first, second = sim_factory(n_cases=20), sim_factory(n_cases=60, seed=5)
    assert run_cli(["sync"], cli_env(first.base_url, schema, pg_url)).returncode == 0
    env = cli_env(second.base_url, schema, pg_url)
    moved = run_cli(["sync"], env)
    assert moved.returncode == ExitCode.CONFIG, moved.stderr[-1500:]
    last = moved.stderr.strip().splitlines()[-1]
    assert first.base_url in last and "commcare-etl reset --resource all --domain demo" in last
    assert run_cli(["reset", "--resource", "all"], env).returncode == 0
    assert run_cli(["sync"], env).returncode == 0
    # Everything of the second server is there (the first server's rows are kept too).
    got = {r[0] for r in db.execute(f'select case_id from "{schema}".cases')}
    assert set(second.snapshot("demo", "case")) <= got


def test_demo_leaves_a_configured_warehouse_alone(schema, pg_url, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMCARE_", "WAREHOUSE_"))}
    env.update({"DATABASE_URL": pg_url, "WAREHOUSE_SCHEMA": schema})
    result = run_cli(["demo", "--cases", "10"], env, cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG
    assert "--use-database-url" in result.stderr
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from pg_namespace where nspname = %s",
                            (schema,)).fetchone()[0] == 0


def test_a_wrong_domain_is_a_configuration_error_said_once(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_DOMAIN="no-such-project")
    result = run_cli(["sync"], env)
    assert result.returncode == ExitCode.CONFIG, result.stderr[-1500:]
    assert result.stderr.count("404") == 2  # the failed stream, and the summary naming it
    assert "COMMCARE_DOMAIN" in result.stderr.strip().splitlines()[-1]


def test_configuration_mistakes_are_errors_not_a_silent_run_of_nothing(sim, schema, pg_url, tmp_path):
    env = cli_env(sim.base_url, schema, pg_url)
    empty = run_cli(["sync"], {**env, "STREAMS": ","})
    assert empty.returncode == ExitCode.CONFIG and "STREAMS" in empty.stderr
    missing = run_cli(["sync"], {**env, "COMMCARE_ETL_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.returncode == ExitCode.CONFIG and "nope.toml" in missing.stderr
    no_scheme = run_cli(["sync"], {**env, "COMMCARE_BASE_URL": "www.commcarehq.org"})
    assert no_scheme.returncode == ExitCode.CONFIG and "COMMCARE_BASE_URL" in no_scheme.stderr


def test_with_log_format_json_every_line_is_json(sim, schema, pg_url):
    import json

    env = cli_env(sim.base_url, schema, pg_url, LOG_FORMAT="json")
    for args, extra in ((["sync"], {}), (["sync"], {"STREAMS": "nope"}),
                        (["sync"], {"COMMCARE_API_KEY": "wrong"})):
        result = run_cli(args, {**env, **extra})
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines, result
        for line in lines:
            entry = json.loads(line)  # raises on a line that is not JSON
            assert {"time", "level", "message"} <= set(entry)


def test_logging_options_work_after_the_command_and_simulate_explains_itself(sim, schema, pg_url):
    env = cli_env(sim.base_url, schema, pg_url)
    result = run_cli(["sync", "--stream", "apps", "--log-level", "DEBUG", "--log-format", "json"], env)
    assert result.returncode == 0, result.stderr[-1000:]
    assert '"level": "DEBUG"' in result.stderr
    helped = run_cli(["simulate", "--help"], env)
    assert helped.returncode == 0
    for option, default in (("--port", "8000"), ("--cases", "500"), ("--replicas", "3")):
        assert option in helped.stdout and f"default: {default}" in helped.stdout


def test_a_failed_migration_is_a_database_error_not_a_crash(sim, schema, pg_url):
    # SQLAlchemy is loaded only to migrate: its errors must still read as database errors.
    code = (
        "import sys\n"
        "import sqlalchemy.exc\n"
        "import etl.db\n"
        "def full_disk(engine, schema):\n"
        "    raise sqlalchemy.exc.OperationalError(\n"
        "        'CREATE TABLE ...', {}, Exception('could not extend file: No space left on device'))\n"
        "etl.db.migrate = full_disk\n"
        "from etl import cli\n"
        "sys.exit(cli.main(['migrate']))\n")
    result = run_cli_patched(code, cli_env(sim.base_url, schema, pg_url))
    assert result.returncode == ExitCode.FAILURE, result.stderr[-2000:]
    assert "database error" in result.stderr and "No space left on device" in result.stderr
    assert "unexpected error" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [
    ["sync"], ["status"], ["demo", "--use-database-url", "--cases", "20"]])
def test_a_command_leaves_no_database_connection_open(sim, schema, pg_url, command):
    code = (
        "import sys\n"
        "import etl.db\n"
        "made, connect = [], etl.db._connect\n"
        "etl.db._connect = lambda dsn: made.append(connect(dsn)) or made[-1]\n"
        "from etl import cli\n"
        f"code = cli.main({command!r})\n"
        "print('open after the command:', sum(not c.closed for c in made), 'of', len(made))\n"
        "sys.exit(code)\n")
    result = run_cli_patched(code, cli_env(sim.base_url, schema, pg_url))
    assert result.returncode == ExitCode.OK, result.stderr[-2000:]
    assert "open after the command: 0 of " in result.stdout, result.stdout
    assert "of 0" not in result.stdout  # the command did connect
