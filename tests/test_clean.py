import json

from etl.extract.client import _NEEDS_CLEANING
from etl.transform import transform_page
from etl.transform.cases import transform_case
from etl.transform.clean import Cleaner, clean_text


def test_nul_and_lone_surrogates_are_removed_and_counted():
    data = json.loads('{"na\\u0000me": ["a\\u0000b", "x\\ud800y", "\\ud83d\\ude00", 3, null]}')
    cleaner = Cleaner()
    assert cleaner(data) == {"name": ["ab", "x\ufffdy", "\U0001F600", 3, None]}
    assert cleaner.changed == 3


def test_clean_text_leaves_good_text_alone():
    assert clean_text("héllo 名字") == ("héllo 名字", False)


def test_raw_body_check_finds_what_needs_cleaning():
    assert _NEEDS_CLEANING.search(b'{"a": "x\\u0000"}')
    assert _NEEDS_CLEANING.search(b'{"a": "x\\ud800"}')
    assert not _NEEDS_CLEANING.search(b'{"a": "x\\u00e9"}')


def test_a_bad_record_is_rejected_not_dropped_and_leaves_no_partial_rows():
    records = [
        {"case_id": "ok", "properties": {"case_type": "t"}, "indices": {}},
        {"case_id": "bad", "properties": {"case_type": "t"}, "indices": {"parent": "not-an-object"}},
        {"properties": {}},
        "not a record",
    ]
    batch = transform_page(records, "demo", transform_case, False, "case_id")
    assert [row[1] for row in batch.rows["cases"]] == ["ok"]
    assert "case_indices" not in batch.rows
    assert [r.record_id for r in batch.rejects] == ["bad", None, None]
    assert all(r.reason and r.raw for r in batch.rejects)
