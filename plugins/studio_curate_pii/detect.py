"""Finding personal data and secrets in text: precompiled patterns plus validators that turn
"looks like" into "is" (Luhn for cards, ``ipaddress`` for IPs, digit counts and context words for
phones, entropy for generic secrets). Each detector returns ``(start, end, kind, subtype)`` spans;
overlaps are resolved by :func:`find_pii`.
"""
from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from typing import Iterator

KINDS = ("email", "phone", "ip_address", "credit_card", "secret")
Span = tuple[int, int, str, str]

# --- e-mail -----------------------------------------------------------------------------------
EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])")

# --- phone ------------------------------------------------------------------------------------
# International: "+" and a country code, then groups separated by spaces, dots or dashes.
PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w-]|\.\d)")
# North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567. Separators required:
# a bare run of ten digits is more often an id than a phone number.
PHONE_US = re.compile(
    r"(?<![\w.+/-])(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)")
# Words right before a number that say it is not a phone number.
NOT_PHONE_CONTEXT = re.compile(
    r"(?:isbn(?:-1[03])?|order|invoice|serial|account|acct|ref(?:erence)?|tracking|case|ticket|id|"
    r"version|ver|v|issn|doi|sku|part|model|patent|policy|batch|lot)\s*(?:no\.?|number|num|#)?\s*[:#]?\s*\Z",
    re.I)

# --- IP addresses -----------------------------------------------------------------------------
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
# Words right before a dotted quad that make it a version, not an address.
VERSION_CONTEXT = re.compile(r"(?:\bv|version|ver\.?|release|build|firmware|v\.|section|chapter|figure|fig\.|table|"
                             r"step|clause|article|§|rule|item|paragraph|appendix|oid)\s*\Z", re.I)

# --- credit cards -----------------------------------------------------------------------------
CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w]|[.-]\d)")
# How people write card numbers: one run of 15 or 16 digits (13- and 19-digit cards are rare, and
# long bare numbers are mostly arithmetic results), or groups of four (Amex/Diners: 4-6-5, 4-6-4).
CARD_GROUPS = re.compile(r"^(?:\d{15,16}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{4,5})$")
# A number inside arithmetic ("= 4212883012996", "355909190063 - 746") is a result, not a card or phone.
ARITHMETIC_BEFORE = re.compile(r"(?:[=+*/×÷^]|\d\s*[-x])\s*\Z")
ARITHMETIC_AFTER = re.compile(r"^\s*(?:[=+*/×÷^]|[-x]\s*\d)")
DIGIT_BEFORE = re.compile(r"[\d)]\s*\Z")  # "12 +9603..." adds, it does not dial
CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9]|22)|35|62|8[1-8])")

# --- secrets ----------------------------------------------------------------------------------
# (subtype, literals one of which the text must contain, pattern): the literal test is a C-speed
# substring search, so a pattern only runs over texts that can hold a match.
SECRET_PATTERNS = (
    ("openai_key", ("sk-",), re.compile(r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}(?![\w-])")),
    ("anthropic_key", ("sk-ant-",), re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}(?![\w-])")),
    ("aws_access_key", ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"),
     re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     re.compile(r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?!\w)")),
    ("gitlab_token", ("glpat-",), re.compile(r"(?<!\w)glpat-[A-Za-z0-9_-]{20,}(?![\w-])")),
    ("slack_token", ("xox",), re.compile(r"(?<!\w)xox[baprse]-[A-Za-z0-9-]{10,}(?![\w-])")),
    ("google_api_key", ("AIza",), re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")),
    ("stripe_key", ("_live_", "_test_"), re.compile(r"(?<!\w)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}(?!\w)")),
    ("huggingface_token", ("hf_",), re.compile(r"(?<!\w)hf_[A-Za-z0-9]{30,}(?!\w)")),
    ("private_key", ("PRIVATE KEY-----",),
     re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )?PRIVATE KEY-----|\Z)")),
    ("jwt", ("eyJ",), re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])")),
)
# "Authorization: Bearer <token>": the token only.
BEARER = re.compile(r"\bBearer\s+([A-Za-z0-9._~+/-]{16,}=*)", re.I)
# A key/token/secret/password word, then within a few characters ("=", ":", "is", quotes) a value.
# Matched only where one of SECRET_WORDS occurs (found by str.find, far cheaper than scanning).
SECRET_ASSIGNMENT = re.compile(
    r"(?i)(?:key|token|secret|passw(?:or)?d|pwd|credentials?)[\w-]{0,20}[\"']?\s*(?:[:=]|=>|\bis\b|\bwas\b)\s*[\"'`]?"
    r"([A-Za-z0-9_\-+/=.~]{16,200})")
# Words (lower-cased) one of which must be in a text for SECRET_ASSIGNMENT to run.
SECRET_WORDS = ("key", "token", "secret", "passw", "pwd", "credential")
# Numbers written with separators: phones, cards and IPv4 addresses all lie inside such runs, so
# their (costlier) patterns only run over these few windows instead of the whole text.
NUMERIC_RUN = re.compile(r"\d[\d ().+\-]{5,}\d")
# Any literal of any SECRET_PATTERNS entry: one search rules them all out for most texts.
SECRET_LITERALS = re.compile("|".join(re.escape(lit) for _, lits, _ in SECRET_PATTERNS for lit in lits))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_random(token: str, min_entropy: float) -> bool:
    """A generated secret rather than a word, path or identifier: mixed character classes and
    high per-character entropy."""
    classes = sum((any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token)))
    return classes >= 2 and any(c.isdigit() for c in token) and entropy(token) >= min_entropy


def _within(pattern: re.Pattern, text: str, windows: list[tuple[int, int]]) -> Iterator[re.Match]:
    """Matches of ``pattern`` inside the windows; lookbehinds still see the text before a window,
    and one character after it is kept so lookaheads see what follows."""
    for start, end in windows:
        yield from pattern.finditer(text, start, min(len(text), end + 1))


def _in_arithmetic(text: str, start: int, end: int) -> bool:
    return bool(ARITHMETIC_BEFORE.search(text[max(0, start - 4):start]) or ARITHMETIC_AFTER.match(text[end:end + 4]))


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in EMAIL.finditer(text):
        yield m.start(), m.end(), "email", "email"


def _phones(text: str, windows: list[tuple[int, int]]) -> Iterator[Span]:
    for pattern, subtype in ((PHONE_INTL, "international"), (PHONE_US, "north_american")):
        if subtype == "international" and "+" not in text:
            continue
        for m in _within(pattern, text, windows):
            digits = re.sub(r"\D", "", m.group(0))
            if subtype == "international":
                if not 8 <= len(digits) <= 15:
                    continue
            else:
                local = digits[1:] if len(digits) == 11 else digits
                if len(local) != 10 or local[0] in "01" or local[3] in "01":
                    continue
            if NOT_PHONE_CONTEXT.search(text[max(0, m.start() - 24):m.start()]):
                continue
            if subtype == "international" and (_in_arithmetic(text, m.start(), m.end())
                                               or DIGIT_BEFORE.search(text[max(0, m.start() - 4):m.start()])):
                continue
            yield m.start(), m.end(), "phone", subtype


def _ips(text: str, include_private: bool, windows: list[tuple[int, int]]) -> Iterator[Span]:
    if windows and "." in text:
        for m in _within(IPV4, text, windows):
            try:
                ip = ipaddress.IPv4Address(m.group(0))
            except ValueError:
                continue
            if VERSION_CONTEXT.search(text[max(0, m.start() - 12):m.start()]):
                continue
            if include_private or ip.is_global:
                yield m.start(), m.end(), "ip_address", "ipv4"
    if "::" in text or text.count(":") >= 7:
        for m in IPV6.finditer(text):
            value = m.group(0)
            groups = [g for g in re.split(r"[:.]", value) if g]
            # Real addresses have several groups; "1::2" and "::3" are Python slices.
            if len(groups) < 3 or max(map(len, groups)) < 3:
                continue
            try:
                ip = ipaddress.IPv6Address(value)
            except ValueError:
                continue
            if include_private or ip.is_global:
                yield m.start(), m.end(), "ip_address", "ipv6"


def _cards(text: str, windows: list[tuple[int, int]]) -> Iterator[Span]:
    for m in _within(CARD, text, windows):
        raw = m.group(0)
        digits = raw.replace(" ", "").replace("-", "")
        if not 13 <= len(digits) <= 19 or not CARD_PREFIX.match(digits) or not CARD_GROUPS.match(raw):
            continue
        if not luhn_ok(digits) or _in_arithmetic(text, m.start(), m.end()):
            continue
        if len(set(digits)) < 2:  # a run of one digit is a filler, not a card
            continue
        yield m.start(), m.end(), "credit_card", "card"


def _secrets(text: str, min_entropy: float) -> Iterator[Span]:
    if SECRET_LITERALS.search(text):
        for subtype, literals, pattern in SECRET_PATTERNS:
            if any(literal in text for literal in literals):
                for m in pattern.finditer(text):
                    yield m.start(), m.end(), "secret", subtype
    lower = text.lower()
    if "bearer" in lower:
        for m in BEARER.finditer(text):
            if looks_random(m.group(1), min_entropy - 0.5):
                yield m.start(1), m.end(1), "secret", "bearer_token"
    seen = set()
    for word in SECRET_WORDS:
        at = lower.find(word)
        while at != -1:
            m = SECRET_ASSIGNMENT.match(text, at)
            if m and m.start(1) not in seen:
                seen.add(m.start(1))
                value = m.group(1).rstrip(".")
                if looks_random(value, min_entropy):
                    yield m.start(1), m.start(1) + len(value), "secret", "generic_secret"
            at = lower.find(word, at + 1)


NUMERIC_KINDS = frozenset({"credit_card", "phone", "ip_address"})
PRIORITY = {"secret": 0, "email": 1, "credit_card": 2, "ip_address": 3, "phone": 4}


def find_pii(text: str, kinds: frozenset[str], include_private_ips: bool = False,
             min_entropy: float = 3.5) -> list[Span]:
    """Non-overlapping spans, in text order. Where detectors overlap, secrets win over e-mails,
    e-mails over cards, cards over IPs, IPs over phones; then the longer span."""
    if not text:
        return []
    spans: list[Span] = []
    if "secret" in kinds:
        spans.extend(_secrets(text, min_entropy))
    if "email" in kinds:
        spans.extend(_emails(text))
    windows = []
    if kinds & NUMERIC_KINDS:
        for m in NUMERIC_RUN.finditer(text):
            start = m.start()
            if start and text[start - 1] in "+(":  # "+1 650...", "(415) 555..."
                start -= 1
            windows.append((start, m.end()))
    if windows:
        if "credit_card" in kinds:
            spans.extend(_cards(text, windows))
        if "phone" in kinds:
            spans.extend(_phones(text, windows))
    if "ip_address" in kinds:
        spans.extend(_ips(text, include_private_ips, windows))
    if len(spans) <= 1:
        return spans
    spans.sort(key=lambda s: (PRIORITY[s[2]], -(s[1] - s[0]), s[0]))
    chosen: list[Span] = []
    for span in spans:
        if all(span[1] <= c[0] or span[0] >= c[1] for c in chosen):
            chosen.append(span)
    chosen.sort()
    return chosen
