"""Conversations that survive a reload or a visit to a product page, per browser, without a login.

The browser keeps only a random key (gr.BrowserState, in its localStorage: the shop's pages and
the chat in its panel share it); the conversation itself (the chat's messages and its ChatState)
stays on the server, in memory, bounded in number, age and length. A restart of the server
starts every conversation anew.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from assistant.chat import ChatState

MAX_CONVERSATIONS = 2000
MAX_AGE_S = 24 * 3600.0
MAX_MESSAGES = 120  # the newest kept; galleries among them are bounded apart (keep_recent_galleries)
KEY_BYTES = 18


@dataclass(frozen=True)
class Saved:
    history: list
    state: ChatState
    at: float


class Conversations:
    """Key -> the last saved conversation; the least recently used go first when full."""

    def __init__(self, max_conversations: int = MAX_CONVERSATIONS, max_age_s: float = MAX_AGE_S,
                 max_messages: int = MAX_MESSAGES):
        self.max_conversations, self.max_age_s, self.max_messages = max_conversations, max_age_s, max_messages
        self._saved: OrderedDict[str, Saved] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_key() -> str:
        return secrets.token_urlsafe(KEY_BYTES)

    @staticmethod
    def well_formed(key) -> bool:
        """A key this server could have made; anything else (a client's own text) is not looked up."""
        return isinstance(key, str) and 16 <= len(key) <= 64 and key.replace("-", "").replace("_", "").isalnum()

    def get(self, key) -> Saved | None:
        if not self.well_formed(key):
            return None
        with self._lock:
            saved = self._saved.get(key)
            if saved is None or time.monotonic() - saved.at > self.max_age_s:
                self._saved.pop(key, None)
                return None
            self._saved.move_to_end(key)
            return saved

    def save(self, key, history: list, state: ChatState) -> None:
        if not self.well_formed(key):
            return
        with self._lock:
            self._saved[key] = Saved(list(history)[-self.max_messages:], state, time.monotonic())
            self._saved.move_to_end(key)
            while len(self._saved) > self.max_conversations:
                self._saved.popitem(last=False)

    def __len__(self) -> int:
        return len(self._saved)


__all__ = ["Conversations", "Saved", "MAX_CONVERSATIONS", "MAX_AGE_S", "MAX_MESSAGES"]
