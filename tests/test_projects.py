"""Many projects in one warehouse, each with its own credentials (from the environment or a
secrets file, never from the settings file) and its own streams; one failing project does not
stop the others."""

from __future__ import annotations

import pytest

from etl.config import load_settings
from etl.errors import ConfigError, ExitCode
from etl.simulator import Dataset, HQSimulator
from tests.conftest import cli_env, run_cli
from tests.matching import assert_cases_match, assert_warehouse_matches


@pytest.fixture
def two_projects():
    datasets = [Dataset.generate(domain="alpha", seed=1, n_cases=40),
                Dataset.generate(domain="beta", seed=2, n_cases=30)]
    users = {"a@example.org": ("key-a", ["alpha"]), "b@example.org": ("key-b", ["beta"])}
    sim = HQSimulator(datasets=datasets, users=users).start()
    yield sim
    sim.stop()


def _config(tmp_path, key_file_text: str = "key-b\n") -> str:
    (tmp_path / "beta.key").write_text(key_file_text)
    path = tmp_path / "projects.toml"
    path.write_text(f"""
[[projects]]
domain = "alpha"
username = "a@example.org"
api_key_env = "ALPHA_API_KEY"

[[projects]]
domain = "beta"
username = "b@example.org"
api_key_file = "{tmp_path / 'beta.key'}"
streams = ["cases"]
""")
    return str(path)


def _env(sim, schema, pg_url, config: str, **extra) -> dict[str, str]:
    env = cli_env(sim.base_url, schema, pg_url, COMMCARE_ETL_CONFIG=config, ALPHA_API_KEY="key-a",
                  **extra)
    for name in ("COMMCARE_DOMAIN", "COMMCARE_USERNAME", "COMMCARE_API_KEY"):
        env.pop(name)
    return env


def test_each_project_syncs_with_its_own_credentials_and_streams(two_projects, schema, pg_url,
                                                                  db, tmp_path):
    sim = two_projects
    result = run_cli(["sync"], _env(sim, schema, pg_url, _config(tmp_path)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_warehouse_matches(db, schema, sim, "alpha")
    assert_cases_match(db, schema, sim, "beta")
    streams = set(db.execute(f'select domain, stream from "{schema}".sync_runs').fetchall())
    assert streams == {("alpha", "apps"), ("alpha", "cases"), ("alpha", "forms"),
                       ("beta", "cases")}
    assert "key-a" not in result.stderr and "key-b" not in result.stderr


def test_one_projects_bad_key_fails_alone(two_projects, schema, pg_url, db, tmp_path):
    sim = two_projects
    result = run_cli(["sync"], _env(sim, schema, pg_url, _config(tmp_path, "wrong\n")))
    assert result.returncode == ExitCode.AUTH, result.stderr[-2000:]
    assert "beta" in result.stderr.strip().splitlines()[-1]
    assert_warehouse_matches(db, schema, sim, "alpha")  # the other project synced
    assert result.stderr.count("HQ refused the credentials") == 2  # the stream, the summary


def test_keys_never_live_in_the_settings_file(tmp_path, monkeypatch):
    path = tmp_path / "bad.toml"
    path.write_text('[[projects]]\ndomain = "alpha"\nusername = "a@example.org"\napi_key = "k"\n')
    monkeypatch.setenv("COMMCARE_ETL_CONFIG", str(path))
    with pytest.raises(ConfigError, match="API key never goes in the settings file"):
        load_settings()
    path.write_text('[[projects]]\ndomain = "alpha"\nusername = "a@example.org"\n'
                    'api_key_env = "NOT_SET_ANYWHERE"\n')
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        load_settings().require_hq_credentials()


def test_a_password_or_key_in_the_settings_file_is_refused(tmp_path, monkeypatch):
    from etl.config import load_settings

    config = tmp_path / "commcare-etl.toml"
    config.write_text('commcare_domain = "demo"\ncommcare_password = "hunter2-secret"\n')
    monkeypatch.setenv("COMMCARE_ETL_CONFIG", str(config))
    with pytest.raises(ConfigError, match="never goes in the settings file") as caught:
        load_settings()
    assert "hunter2-secret" not in str(caught.value)
