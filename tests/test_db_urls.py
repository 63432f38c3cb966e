"""DATABASE_URL as the loads (psycopg, libpq) and the migrations (SQLAlchemy) read it: the same
server and credentials, whatever characters the password holds; shown with it masked."""

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from etl.db import check_connection, libpq_url, masked_url, sqlalchemy_url
from etl.errors import ConfigError

URLS = [
    "postgresql://u:secret@h:5432/db",
    "postgresql://u:pa/ss+w0rd==@h/db",  # base64, as generated passwords are
    "postgresql://u:p%ss@h/db",  # a raw %
    "postgresql://u:p%40ss@h/db",  # an encoded @
    "postgresql://u:a:b@h/db",
    "postgresql://u:@h/db",
    "postgresql://u@/db?host=/tmp/pg",
    "postgres://h:6543/db",
    "postgresql+psycopg://u:x@h/db?sslmode=require",
]


@pytest.mark.parametrize("url", URLS)
def test_libpq_reads_the_server_and_credentials_sqlalchemy_reads(url):
    theirs = make_url(sqlalchemy_url(url))
    ours = conninfo_to_dict(libpq_url(url))
    assert ours.get("user") == theirs.username
    assert ours.get("password") == (theirs.password or None)
    assert (ours.get("host"), ours.get("dbname")) == (
        theirs.host or theirs.query.get("host"), theirs.database)
    assert ours.get("port") == (str(theirs.port) if theirs.port else None)


@pytest.mark.parametrize("url", URLS)
def test_a_shown_url_masks_the_password(url):
    password = make_url(sqlalchemy_url(url)).password
    shown = masked_url(libpq_url(url))
    if password:
        assert password not in shown and ":***@" in shown
    else:
        assert "***" not in shown
    assert shown.startswith("postgresql://")


def test_an_unreachable_server_names_the_url_without_its_password():
    with pytest.raises(ConfigError) as failed:
        check_connection(libpq_url("postgresql://u:pa/ss%@127.0.0.1:1/db"))
    message = str(failed.value)
    assert "postgresql://u:***@127.0.0.1:1/db" in message and "pa/ss" not in message
    assert "Check DATABASE_URL" in message


def test_a_url_libpq_cannot_read_is_a_configuration_error():
    with pytest.raises(ConfigError):
        check_connection("postgresql://h:notaport/db")
    with pytest.raises(psycopg.Error):  # what check_connection turns into a ConfigError
        psycopg.connect("postgresql://h:notaport/db")
