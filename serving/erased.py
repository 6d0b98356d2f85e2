"""Erased people are never served, even before the online store is cleaned.

An erasure writes the tokens of the person's customer ids into privacy/suppressions.parquet before
it touches any store (cdp.privacy.erasure); the service reads that list, re-reads it when the file
changes (one stat per request), and answers for those ids as for an unknown customer. When the key
at hand did not make the list (a changed key, a rekey under way) every scoring route answers 503:
an erased person could not be recognized.
"""

from __future__ import annotations

import threading

from cdp.privacy.erasure import suppressed_customer_tokens, suppression_key, suppressions_path
from cdp.privacy.subjects import PrivacyKeyMismatch, token
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
                try:
                    self.key = suppression_key(self.ws)  # the key the list was made with, or refused
                except (
                    PrivacyKeyMismatch
                ) as error:  # rekey under way, key lost or changed: fail closed, retry next time
                    from bentoml.exceptions import ServiceUnavailable

                    self.seen = None
                    raise ServiceUnavailable(f"cannot check erasures: {error}") from None
                self.tokens = suppressed_customer_tokens(self.ws)
                self.seen = (stat.st_mtime_ns, stat.st_size)

    def __contains__(self, customer_id: str) -> bool:
        self._refresh()
        return bool(self.tokens) and token(f"customer:{customer_id}", self.key) in self.tokens
