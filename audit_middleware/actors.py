"""Who did it: users, API tokens, system jobs and anonymous visitors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ActorType = Literal["user", "token", "system", "anonymous"]
ACTOR_TYPES: tuple[str, ...] = ("user", "token", "system", "anonymous")


@dataclass(frozen=True, slots=True)
class Actor:
    """The one who performed an audited action.

    Build one with the class methods; ``type`` is one of ``user``, ``token``, ``system``, ``anonymous``.
    """

    type: ActorType
    id: str | None
    name: str | None

    @classmethod
    def user(cls, id: object, name: str | None = None) -> Actor:
        """A logged-in user, by primary key and display name (usually the email)."""
        return cls("user", str(id), name)

    @classmethod
    def token(cls, id: object, label: str | None = None, *, secret: str | None = None) -> Actor:
        """An API access token. Its secret is never kept: pass ``secret`` only to show its last 4 characters.

        ``Actor.token("tok_12", "ci-deploy", secret="sk_live_...a1b2")`` is named ``ci-deploy (...a1b2)``.
        """
        name = label if label is not None else str(id)
        if secret:
            name = f"{name} (...{secret[-4:]})"
        return cls("token", str(id), name)

    @classmethod
    def system(cls, name: str) -> Actor:
        """A background job or scheduled task; its id is its name."""
        return cls("system", name, name)

    @classmethod
    def anonymous(cls) -> Actor:
        """Nobody we could identify."""
        return ANONYMOUS

    def as_dict(self) -> dict[str, str | None]:
        return {"type": self.type, "id": self.id, "name": self.name}


ANONYMOUS = Actor("anonymous", None, None)
