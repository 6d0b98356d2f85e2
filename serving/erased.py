"""Erased people are never served, even before the online store is cleaned.

An erasure writes the tokens of the person's customer ids into privacy/suppressions.parquet before
it touches any store (cdp.privacy.erasure); the service reads that list, re-reads it when the file
changes (one stat per request), and answers for those ids as for an unknown customer.
"""

from __future__ import annotations

import threading

from cdp.privacy.erasure import suppressed_customer_tokens, suppressions_path
from cdp.privacy.subjects import privacy_key, token
from cdp.workspace import Workspace


class ErasedCustomers:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.path = suppressions_path(ws)
        self.lock = threading.Lock()
        self.seen: tuple[int, int] | None = None
        self.tokens: set[str] = set()
        self.key = b""

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self.seen, self.tokens = None, set()
            return
        if (stat.st_mtime_ns, stat.st_size) != self.seen:
            with self.lock:
                self.key = privacy_key(self.ws)
                self.tokens = suppressed_customer_tokens(self.ws)
                self.seen = (stat.st_mtime_ns, stat.st_size)

    def __contains__(self, customer_id: str) -> bool:
        self._refresh()
        return bool(self.tokens) and token(f"customer:{customer_id}", self.key) in self.tokens
