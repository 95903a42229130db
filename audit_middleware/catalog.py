"""The event catalog: every event name the app can record, its category and action.

Names read ``"<Resource> <Verb>"`` ("Warehouse Disabled", "User Invite Sent"). Tracked models get their
CRUD events defined automatically; the app defines its other verbs once. Recording an unknown name raises
:class:`~audit_middleware.errors.UnknownEventError` with the closest known name.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import UnknownEventError

CRUD_VERBS: tuple[str, ...] = ("Created", "Modified", "Deleted")
TOGGLE_VERBS: tuple[str, ...] = ("Enabled", "Disabled")


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def words_of(class_name: str) -> str:
    """``"DestinationFilter"`` -> ``"Destination Filter"``; ``"SSOLogin"`` -> ``"SSO Login"``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", class_name).replace("_", " ")


def default_category(resource: str) -> str:
    return resource if resource.endswith("s") else resource + "s"


@dataclass(frozen=True, slots=True)
class EventDefinition:
    """One catalog entry."""

    name: str
    category: str
    action: str
    resource: str | None = None
    must_record: bool = False
    description: str = ""


class EventCatalog:
    """A thread-safe registry of event definitions, in definition order."""

    def __init__(self) -> None:
        self._events: dict[str, EventDefinition] = {}
        self._lock = threading.Lock()

    def define(
        self,
        name: str,
        category: str,
        *,
        resource: str | None = None,
        action: str | None = None,
        must_record: bool = False,
        description: str = "",
    ) -> EventDefinition:
        """Define an event. Redefining a name with the same category is a no-op; a different one is an error."""
        name = " ".join(name.split())
        if not name or not category:
            raise ValueError("an event needs a non-empty name and category")
        if action is None:
            rest = name[len(resource):].strip() if resource and name.startswith(resource + " ") else name
            action = slugify(rest)
        definition = EventDefinition(name, category, action, resource, must_record, description)
        with self._lock:
            existing = self._events.get(name)
            if existing is not None:
                if existing.category != category:
                    raise ValueError(
                        f"event {name!r} is already defined in category {existing.category!r}, "
                        f"not {category!r}"
                    )
                if must_record and not existing.must_record:
                    self._events[name] = definition
                    return definition
                return existing
            self._events[name] = definition
        return definition

    def define_resource(self, resource: str, category: str, *, toggle: bool) -> list[EventDefinition]:
        """Define ``<resource> Created/Modified/Deleted`` (and ``Enabled/Disabled`` when ``toggle``)."""
        verbs = CRUD_VERBS + (TOGGLE_VERBS if toggle else ())
        return [
            self.define(f"{resource} {verb}", category, resource=resource, action=verb.lower())
            for verb in verbs
        ]

    def get(self, name: str) -> EventDefinition:
        """The definition of ``name``; raises UnknownEventError naming the closest known event."""
        try:
            return self._events[name]
        except KeyError:
            pass
        match = difflib.get_close_matches(name, list(self._events), n=1, cutoff=0.5)
        if not match:
            lowered = {n.lower(): n for n in self._events}
            close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.4)
            match = [lowered[close[0]]] if close else []
        raise UnknownEventError(name, match[0] if match else None)

    def __contains__(self, name: object) -> bool:
        return name in self._events

    def __iter__(self) -> Iterator[EventDefinition]:
        return iter(list(self._events.values()))

    def __len__(self) -> int:
        return len(self._events)

    def names(self) -> list[str]:
        return list(self._events)

    def categories(self) -> list[str]:
        return sorted({d.category for d in self._events.values()})

    def grouped(self) -> list[tuple[str, list[EventDefinition]]]:
        """Events grouped by category, both sorted by name: what the admin view's event filter shows."""
        groups: dict[str, list[EventDefinition]] = {}
        for definition in self._events.values():
            groups.setdefault(definition.category, []).append(definition)
        return [(cat, sorted(groups[cat], key=lambda d: d.name)) for cat in sorted(groups)]

    def extend(self, definitions: Iterable[tuple[str, str]]) -> None:
        """Define many ``(name, category)`` pairs at once."""
        for name, category in definitions:
            self.define(name, category)
