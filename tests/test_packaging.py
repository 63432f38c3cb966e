"""What docker-compose.yml and the Dockerfile promise, checked without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from etl.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_sync_job_against_its_postgres():
    services = _compose()["services"]
    assert set(services) >= {"postgres", "sync"}
    pg, job = services["postgres"], services["sync"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert job["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert job["build"] == "." and (ROOT / "Dockerfile").exists()
    assert job["command"] == ["sync"]
    url = job["environment"]["DATABASE_URL"]
    m = re.match(r"postgresql://(\w+):(.+)@postgres:5432/(\w+)$", url)
    assert m, url
    assert m.group(1) == pg["environment"]["POSTGRES_USER"]
    assert m.group(3) == pg["environment"]["POSTGRES_DB"]
    assert m.group(2) == pg["environment"]["POSTGRES_PASSWORD"]
    assert any(v.startswith("warehouse-data:") for v in pg["volumes"])


def test_compose_passes_only_settings_commcare_etl_knows():
    known = {name.upper() for name in Settings.model_fields}
    env = _compose()["services"]["sync"]["environment"]
    assert set(env) <= known, set(env) - known
    assert {"COMMCARE_DOMAIN", "COMMCARE_USERNAME", "COMMCARE_API_KEY"} <= set(env)


def test_dockerfile_installs_the_package_and_runs_the_cli():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["commcare-etl"]' in text
    for path in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    assert re.search(r"^USER (?!root)", text, re.M), "the job should not run as root"


def test_example_config_files_hold_only_known_settings():
    import tomllib

    known = {name for name in Settings.model_fields}
    toml = tomllib.loads((ROOT / "config" / "commcare-etl.example.toml").read_text())
    assert set(toml) <= known, set(toml) - known
    env_names = {line.split("=")[0].lstrip("# ").strip()
                 for line in (ROOT / "config" / "example.env").read_text().splitlines()
                 if "=" in line}
    assert {n.lower() for n in env_names} <= known
