"""How the same email, phone or name gets written differently across systems and records.

In: a canonical value (lower-case email, 10-digit phone, first/last name) and a style. Out:
the value as a person, a cashier or a form would write it: mixed case, gmail dots, +tags,
padding; eight phone formats; nicknames (via the `nicknames` package), typos, swaps, case.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from nicknames import NickNamer

from .reference import DOT_INSENSITIVE, EMAIL_TAGS, PLUS_TAG_DOMAINS

# email styles: 0 as is, 1 Title.Case, 2 Capital domain, 3 UPPER, 4 gmail dots toggled,
# 5 +tag, 6 padded with spaces
EMAIL_STYLE_CRM = (0.80, 0.06, 0.04, 0.03, 0.03, 0.02, 0.02)
EMAIL_STYLE_FORM = (0.66, 0.08, 0.05, 0.02, 0.06, 0.11, 0.02)
# phone formats, see render_phone
PHONE_CRM = (0.50, 0.15, 0.08, 0.05, 0.12, 0.05, 0.03, 0.02)
PHONE_POS = (0.08, 0.12, 0.60, 0.02, 0.02, 0.04, 0.10, 0.02)
PHONE_FORM = (0.25, 0.20, 0.20, 0.08, 0.10, 0.05, 0.07, 0.05)


def render_email(email: str, style: int, tag: str = "shop") -> str:
    """One way a person or a system writes `email` (all of them denote the same mailbox)."""
    local, _, domain = email.partition("@")
    if style == 1:
        return f"{local.title()}@{domain}"
    if style == 2:
        return f"{local}@{domain.capitalize()}"
    if style == 3:
        return email.upper()
    if style == 4 and domain in DOT_INSENSITIVE:
        half = len(local) // 2
        flipped = local.replace(".", "") if "." in local else f"{local[:half]}.{local[half:]}"
        return f"{flipped}@{domain}"
    if style == 5 and domain in PLUS_TAG_DOMAINS:
        return f"{local.title()}+{tag}@{domain.capitalize()}"
    if style == 6:
        return f" {email} "
    return email


def render_phone(digits: str, style: int) -> str:
    """A 10-digit US number in one of eight common national/international formats."""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return (
        f"({a}) {b}-{c}",
        f"{a}-{b}-{c}",
        digits,
        f"{a}.{b}.{c}",
        f"+1 {a}-{b}-{c}",
        f"1-{a}-{b}-{c}",
        f"+1{digits}",
        f"{a} {b} {c}",
    )[style]


def emails_as_written(rng: np.random.Generator, emails: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """Render each email (None stays None) with a style drawn from `weights`."""
    styles = rng.choice(len(weights), len(emails), p=np.array(weights) / sum(weights))
    tags = rng.integers(0, len(EMAIL_TAGS), len(emails))
    return np.array(
        [None if e is None else render_email(e, s, EMAIL_TAGS[t]) for e, s, t in zip(emails, styles, tags)],
        dtype=object,
    )


def phones_as_written(rng: np.random.Generator, digits: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    styles = rng.choice(len(weights), len(digits), p=np.array(weights) / sum(weights))
    return np.array([None if d is None else render_phone(d, s) for d, s in zip(digits, styles)], dtype=object)


@lru_cache(maxsize=1)
def _namer() -> NickNamer:
    return NickNamer()


def _typo(rng: np.random.Generator, name: str) -> str:
    if len(name) < 4:
        return name + name[-1]
    i = int(rng.integers(1, len(name) - 1))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    if kind == 1:
        return name[:i] + name[i + 1 :]
    return name[:i] + name[i] + name[i:]


def name_variant(rng: np.random.Generator, first: str, last: str, kind: str) -> tuple[str, str]:
    """(first, last) as another record spells it: nickname, typo, swap, case or none."""
    if kind == "nickname":
        options = sorted(_namer().nicknames_of(first.lower()) | _namer().canonicals_of(first.lower()))
        if options:
            return options[int(rng.integers(0, len(options)))].capitalize(), last
        kind = "typo"
    if kind == "typo":
        return (_typo(rng, first), last) if rng.random() < 0.5 else (first, _typo(rng, last))
    if kind == "swap":
        return last, first
    if kind == "case":
        return (first.upper(), last.upper()) if rng.random() < 0.5 else (first.lower(), last.lower())
    return first, last
