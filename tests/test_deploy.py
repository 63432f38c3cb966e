"""deploy/: the Kubernetes CronJob and the Airflow DAG say what the README promises (checked by
parsing them: no cluster, no Airflow here), and the claim both rely on — overlapping runs on
several domains against one warehouse are harmless — holds for real processes."""

from __future__ import annotations

import ast
import subprocess
import sys

import yaml

from etl.config import Settings
from etl.errors import ExitCode
from tests.conftest import ROOT, cli_env, run_cli
from tests.matching import assert_warehouse_matches


def test_the_cronjob_forbids_overlap_and_takes_secrets_from_a_secret():
    job = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    known = {name.upper() for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    for secret in ("COMMCARE_API_KEY", "DATABASE_URL"):
        assert "secretKeyRef" in env[secret]["valueFrom"] and "value" not in env[secret]
    assert container["resources"]["limits"]["memory"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_the_dag_has_a_task_per_project_and_stream_in_a_pool_per_project():
    tree = ast.parse((ROOT / "deploy" / "airflow" / "commcare_etl_dag.py").read_text())
    source = ast.unparse(tree)
    assert "pool=f'commcare_{domain}'" in source
    assert "--domain {domain} --stream {stream}" in source
    assert "tasks['apps'] >> [tasks['cases'], tasks['forms']]" in source
    assert "skip_on_exit_code=99" in source and "-eq 4" in source  # a held lock is a skip
    streams = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", None) == "STREAMS")
    assert ast.literal_eval(streams) == ("apps", "cases", "forms")


def test_overlapping_runs_on_several_domains_against_one_warehouse_are_harmless(
        sim_factory, schema, pg_url, db, tmp_path):
    sim = sim_factory(n_cases=150, domains=("alpha", "beta"))
    sim.faults.add("slow", count=40, delay=0.05)  # keep the runs in flight together
    procs = []
    for n in range(6):
        env = cli_env(sim.base_url, schema, pg_url, COMMCARE_DOMAIN=("alpha", "beta")[n % 2],
                      CASE_PAGE_SIZE="40", FORM_PAGE_SIZE="40")
        log = open(tmp_path / f"run{n}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "etl", "sync"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=log))
    codes = [p.wait(timeout=300) for p in procs]
    # 0, or 4: another run had (some of) the work. Never a failure.
    assert set(codes) <= {ExitCode.OK, ExitCode.LOCKED}, [
        (tmp_path / f"run{n}.log").read_text()[-800:] for n in range(6)]
    done = db.execute(f"select count(distinct (domain, stream)) from \"{schema}\".sync_runs "
                      f"where status = 'ok'").fetchone()[0]
    assert done == 6  # every (domain, stream) was synced by one of them
    # Whatever the interleaving, one more run each leaves the warehouse equal to HQ.
    for domain in ("alpha", "beta"):
        assert run_cli(["sync"], cli_env(sim.base_url, schema, pg_url,
                                         COMMCARE_DOMAIN=domain)).returncode == 0
        assert_warehouse_matches(db, schema, sim, domain)
    overlaps = db.execute(f"""
        select count(*) from "{schema}".sync_runs a join "{schema}".sync_runs b
          on a.domain = b.domain and a.stream = b.stream and a.id < b.id
         and a.started_at < b.finished_at and b.started_at < a.finished_at
        where a.status = 'ok' and b.status = 'ok'""").fetchone()[0]
    assert overlaps == 0  # two runs of one (domain, stream) never ran at once
