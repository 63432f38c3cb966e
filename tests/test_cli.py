"""The CLI as an operator meets it: exit codes and one clear line on failure."""

from __future__ import annotations

import pytest

from etl.errors import ExitCode
from tests.conftest import cli_env, run_cli


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
    env = cli_env(sim.base_url, schema, "postgresql://nobody@127.0.0.1:1/nowhere")
    result = run_cli(["migrate"], env)
    assert result.returncode == ExitCode.CONFIG
    assert "cannot connect to the warehouse database" in result.stderr


def test_settings_file_under_config_is_read(sim, schema, pg_url, tmp_path):
    config = tmp_path / "commcare-etl.toml"
    config.write_text(f'commcare_domain = "demo"\nstreams = "cases"\n')
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_ETL_CONFIG=str(config))
    del env["COMMCARE_DOMAIN"]
    result = run_cli(["sync"], env)
    assert result.returncode == 0, result.stderr
    assert "sync cases [demo]: ok" in result.stderr and "sync forms" not in result.stderr
