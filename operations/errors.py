"""Structured refusals: `reason` is for code (an HTTP status, a chat wording), the message for a person."""
from __future__ import annotations

from typing import Any

from catalog.errors import UserError


class Refused(UserError):
    """A request the policy turns down before any search.

    `reason` is one of REASONS; `details` carries what a client can act on (the models offered,
    the allowed range of k)."""

    REASONS = ("unknown_model", "bad_k", "no_photo", "too_large", "no_product", "nothing_found")

    def __init__(self, reason: str, message: str, **details: Any):
        if reason not in self.REASONS:
            raise UserError(f"unknown refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details
