import datetime as dt
import decimal
import enum
import uuid

from audit_middleware.diff import MASK, Masking, diff_values, snapshot, split_toggle
from audit_middleware.values import dumps, json_safe


class Color(enum.Enum):
    RED = "red"


def test_values_that_are_not_json_by_nature_become_json_safe_without_losing_information():
    zone = dt.timezone(dt.timedelta(hours=2))
    value = {
        "decimal": decimal.Decimal("12345678901234567890.123456789"),
        "naive": dt.datetime(2026, 11, 25, 19, 7, 41, 123456),
        "aware": dt.datetime(2026, 11, 25, 19, 7, 41, tzinfo=zone),
        "date": dt.date(2026, 11, 25),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "enum": Color.RED,
        "bytes": b"\x00\xff",
        "set": {3, 1, 2},
        "tuple": (1, "a"),
        "nan": float("nan"),
        "unicode": "Zürich 東京 🚀",
    }
    safe = json_safe(value)
    assert safe == {
        "decimal": "12345678901234567890.123456789",
        "naive": "2026-11-25T19:07:41.123456",
        "aware": "2026-11-25T19:07:41+02:00",
        "date": "2026-11-25",
        "uuid": "12345678-1234-5678-1234-567812345678",
        "enum": "red",
        "bytes": "base64:AP8=",
        "set": [1, 2, 3],
        "tuple": [1, "a"],
        "nan": "nan",
        "unicode": "Zürich 東京 🚀",
    }
    assert "東京" in dumps(safe)


def test_diff_keeps_changed_fields_only_and_masks_sensitive_ones():
    masking = Masking.of(None, extra=["iban"])
    old = {"name": "a", "password": "hunter2", "db_password": "x", "iban": "DE1", "same": 1}
    new = {"name": "b", "password": "hunter3", "db_password": "y", "iban": "DE2", "same": 1}
    assert diff_values(old, new, masking) == {
        "name": ["a", "b"], "password": [MASK, MASK], "db_password": [MASK, MASK], "iban": [MASK, MASK],
    }


def test_diff_of_equal_values_is_empty_but_type_changes_count():
    masking = Masking()
    assert diff_values({"a": 1}, {"a": 1}, masking) == {}
    assert diff_values({"a": 1}, {"a": True}, masking) == {"a": [1, True]}


def test_snapshot_of_created_row_leaves_out_nulls_and_masks():
    assert snapshot({"id": 1, "note": None, "token": "t"}, Masking(), created=True) == {
        "id": [None, 1], "token": [None, MASK],
    }
    assert snapshot({"id": 1, "note": None}, Masking(), created=False) == {"id": [1, None], "note": [None, None]}


def test_toggle_flip_is_split_from_other_changes():
    verb, toggled, others = split_toggle({"enabled": [True, False], "name": ["a", "b"]}, "enabled")
    assert (verb, toggled, others) == ("Disabled", {"enabled": [True, False]}, {"name": ["a", "b"]})
    assert split_toggle({"enabled": [False, True]}, "enabled")[0] == "Enabled"
    assert split_toggle({"name": ["a", "b"]}, "enabled")[0] is None
    assert split_toggle({"enabled": [None, False]}, "enabled")[0] is None


def test_subclasses_of_the_common_types_convert_as_the_types_do():
    """The exact common types take a shortcut past the isinstance checks; their subclasses must not lose it."""
    import collections

    class Moment(dt.datetime):
        pass

    class Tags(list):
        pass

    value = collections.OrderedDict(at=Moment(2026, 11, 25, 19, 7, 41), day=dt.date(2026, 11, 25),
                                    tags=Tags([decimal.Decimal("1.50"), uuid.UUID(int=1)]), time=dt.time(9, 30))
    assert json_safe(value) == {"at": "2026-11-25T19:07:41", "day": "2026-11-25",
                                "tags": ["1.50", "00000000-0000-0000-0000-000000000001"], "time": "09:30:00"}
    assert json_safe({1: [dt.datetime(2026, 1, 2, 3, 4, 5, 6)]}) == {"1": ["2026-01-02T03:04:05.000006"]}
