"""What the portal tells a person who asked for something that cannot be done."""

from __future__ import annotations


class OrganisationError(Exception):
    """What was asked cannot be done; ``field`` names the form field at fault, if one is."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message, self.field = message, field
