import pytest

from audit_middleware import EventCatalog, UnknownEventError
from audit_middleware.catalog import words_of


def test_resource_events_are_defined_with_toggle_verbs_only_when_asked():
    catalog = EventCatalog()
    catalog.define_resource("Warehouse", "Warehouses", toggle=True)
    catalog.define_resource("Space", "Engage", toggle=False)
    assert catalog.get("Warehouse Disabled").action == "disabled"
    assert catalog.get("Warehouse Disabled").category == "Warehouses"
    assert "Space Created" in catalog and "Space Enabled" not in catalog


def test_app_verbs_get_an_action_slug_from_the_verb_part():
    catalog = EventCatalog()
    d = catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    assert d.action == "run_failed"
    assert catalog.define("Audience CSV Downloaded", "Engage").action == "audience_csv_downloaded"


def test_unknown_name_raises_with_the_closest_known_name():
    catalog = EventCatalog()
    catalog.define_resource("Warehouse", "Warehouses", toggle=True)
    with pytest.raises(UnknownEventError) as info:
        catalog.get("Warehouse Disable")
    assert info.value.suggestion == "Warehouse Disabled"
    assert "Did you mean 'Warehouse Disabled'?" in str(info.value)
    with pytest.raises(UnknownEventError, match="catalog.define"):
        catalog.get("Totally Unrelated Thing")


def test_redefining_with_another_category_is_refused():
    catalog = EventCatalog()
    catalog.define("User Invite Sent", "Access Management")
    assert catalog.define("User Invite Sent", "Access Management").category == "Access Management"
    with pytest.raises(ValueError, match="already defined"):
        catalog.define("User Invite Sent", "Users")


def test_grouped_is_sorted_by_category_then_name():
    catalog = EventCatalog()
    catalog.extend([("Source Deleted", "Source"), ("Audience Created", "Engage"), ("Source Created", "Source")])
    assert [(c, [d.name for d in ds]) for c, ds in catalog.grouped()] == [
        ("Engage", ["Audience Created"]), ("Source", ["Source Created", "Source Deleted"]),
    ]


@pytest.mark.parametrize("name, words", [
    ("Warehouse", "Warehouse"), ("DestinationFilter", "Destination Filter"), ("SSOLogin", "SSO Login"),
    ("engage_source", "engage source"),
])
def test_class_names_become_resource_words(name, words):
    assert words_of(name) == words
