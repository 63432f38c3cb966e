# commcare-etl as a container job: `docker compose run --rm sync` (see README, "Scheduling").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY etl ./etl
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 10001 etl
USER etl
WORKDIR /home/etl
ENTRYPOINT ["commcare-etl"]
CMD ["sync"]
