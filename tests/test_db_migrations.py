"""Migrations: named NNNN_<what>.py with revision "NNNN", in one line; an up-to-date schema is
checked with one query, without loading alembic."""

from __future__ import annotations

import ast
import subprocess
import sys

from etl.db import _at_head, head_revision
from tests.conftest import ROOT


def _revisions() -> list[tuple[str, str, str | None]]:
    out = []
    for path in sorted((ROOT / "migrations" / "versions").glob("[0-9]*.py")):
        values = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("revision", "down_revision"):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
        out.append((path.name, values["revision"], values["down_revision"]))
    return out


def test_each_migration_is_named_by_its_revision_and_follows_the_one_before():
    revisions = _revisions()
    assert len(revisions) >= 10
    previous = None
    for name, revision, down in revisions:
        assert name[:4] == revision, name
        assert down == previous, name
        previous = revision
    assert head_revision() == revisions[-1][1]


def test_an_up_to_date_schema_is_checked_without_sqlalchemy_or_alembic(warehouse, db, schema):
    warehouse.migrate()
    (version,) = db.execute(f'select version_num from "{schema}".alembic_version').fetchone()
    assert version == head_revision()
    code = (
        "import sys; from etl.db import Warehouse\n"
        f"w = Warehouse.open({warehouse.url!r}, None, {schema!r}); w.migrate()\n"
        "with w.connect() as conn: conn.execute('select 1')\n"
        "import etl.cli, etl.sync\n"
        "assert 'alembic' not in sys.modules, 'alembic was loaded'\n"
        "assert 'sqlalchemy' not in sys.modules, 'SQLAlchemy was loaded'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    # A schema one migration behind is not mistaken for an up-to-date one.
    db.execute(f'update "{schema}".alembic_version set version_num = %s',
               (_revisions()[-2][1],))
    with warehouse.connect() as conn:
        assert not _at_head(conn, schema)
