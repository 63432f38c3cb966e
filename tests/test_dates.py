from datetime import datetime, timezone

import pytest

from etl.dates import format_v05, parse_hq_datetime, parse_user_date, truncate_ms

UTC = timezone.utc


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T10:15:33.456789Z", datetime(2024, 5, 1, 10, 15, 33, 456789, UTC)),
    ("2024-05-01T10:15:33.456789", datetime(2024, 5, 1, 10, 15, 33, 456789, UTC)),
    ("2024-05-01T10:15:33Z", datetime(2024, 5, 1, 10, 15, 33, tzinfo=UTC)),
    ("2024-05-01T10:15:33", datetime(2024, 5, 1, 10, 15, 33, tzinfo=UTC)),
    ("2024-05-01T10:15:33.4Z", datetime(2024, 5, 1, 10, 15, 33, 400000, UTC)),
    ("2024-05-01T12:15:33+02:00", datetime(2024, 5, 1, 10, 15, 33, tzinfo=UTC)),
    ("2024-05-01 10:15:33", datetime(2024, 5, 1, 10, 15, 33, tzinfo=UTC)),
    ("2024-05-01T10:15Z", datetime(2024, 5, 1, 10, 15, tzinfo=UTC)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
])
def test_every_hq_date_shape_parses_to_utc(text, expected):
    assert parse_hq_datetime(text) == expected


@pytest.mark.parametrize("text", ["1900-01-01", "1900-01-01T00:00:00Z", "", None, "soon", "2024-13-45",
                                  "9999-12-31T23:00:00-05:00"])
def test_placeholders_and_garbage_become_null(text):
    assert parse_hq_datetime(text) is None


def test_v05_filter_format_is_naive_utc_with_microseconds():
    moment = datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=timezone.utc)
    assert format_v05(moment) == "2024-05-01T12:00:00.000005"
    assert format_v05(parse_hq_datetime("2024-05-01T14:00:00+02:00")) == "2024-05-01T12:00:00.000000"


def test_truncate_ms_and_user_dates():
    assert truncate_ms(datetime(2024, 1, 1, 0, 0, 0, 123456)).microsecond == 123000
    assert parse_user_date("2024-02-03") == datetime(2024, 2, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_user_date("yesterday")
