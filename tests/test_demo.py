"""`commcare-etl demo` as a new user runs it: no credentials, no DATABASE_URL."""

from __future__ import annotations

import os

import psycopg

from tests.conftest import ROOT, run_cli


def test_demo_syncs_the_simulator_into_the_embedded_postgres(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMMCARE_", "WAREHOUSE_", "DATABASE_URL"))}
    env.update(EMBEDDED_PG_DIR=str(tmp_path / "pgdata"),
               COMMCARE_ETL_CONFIG=str(ROOT / "tests" / "empty-config.toml"))
    try:
        result = run_cli(["demo", "--cases", "40"], env, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        out = result.stdout
        assert "first sync:" in out and "incremental sync:" in out
        assert "psql '" in out and "commcare.cases" in out
        url = out.split("psql '")[1].split("'")[0]
        with psycopg.connect(url) as conn:
            cases = conn.execute("select count(*) from commcare.cases where domain = 'demo'").fetchone()[0]
            closed = conn.execute("select count(*) from commcare.cases where closed").fetchone()[0]
            assert cases >= 50  # 40 generated (+ their households) + 10 added by the demo
            assert closed >= 5
            assert conn.execute("select count(*) from commcare.sync_runs where status = 'ok'"
                                ).fetchone()[0] >= 6
        # A second demo run is incremental: nothing new the first time round.
        again = run_cli(["demo", "--cases", "40"], env, timeout=300, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        from etl.db import stop_embedded

        stop_embedded(tmp_path / "pgdata")
