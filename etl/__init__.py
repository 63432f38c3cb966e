"""commcare-etl: keep a PostgreSQL warehouse in sync with CommCare HQ."""

__version__ = "0.1.0"
