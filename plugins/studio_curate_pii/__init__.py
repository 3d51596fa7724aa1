"""PII and secret redaction: the ``pii_redact`` curation op.

Finds e-mail addresses, phone numbers (international ``+CC`` and North American formats, never a
bare run of digits, a year, a date, an ISBN or an order number), IPv4/IPv6 addresses (public ones
unless ``include_private_ips``), credit card numbers (Luhn-checked, known issuer prefixes) and
secrets (OpenAI/Anthropic/AWS/GitHub/GitLab/Slack/Google/Stripe/Hugging Face keys, private key
blocks, JWTs, Bearer tokens, and high-entropy values assigned to key/token/secret/password words).

``action: redact`` replaces each finding with a typed placeholder (``<EMAIL>``; the template can
number distinct values per record: ``<EMAIL_1>``) and records a change; ``action: drop`` removes
the row. Details carry counts per kind and where they were found, never the values themselves
(the side table must not become a copy of the personal data).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studio.curation.op_base import Change, CurationOp, OpContext, OpInput, OpResult, Removal
from studio.hookspecs import hookimpl
from studio_curate_pii.detect import KINDS, find_pii

Kind = Literal["email", "phone", "ip_address", "credit_card", "secret"]
Role = Literal["system", "user", "assistant", "tool_call", "tool"]
SIDES = ("messages", "chosen", "rejected")


class PiiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[Kind] = Field(list(KINDS), description="what to find: email, phone, ip_address, credit_card, secret "
                                                       "(API keys, tokens, passwords, private keys)")
    action: Literal["redact", "drop"] = Field("redact", description="redact: replace findings with placeholders; "
                                                                    "drop: remove rows that contain any")
    placeholder: str = Field("<{KIND}>", description="replacement template: {KIND} / {kind} is the kind "
                                                     "(EMAIL, PHONE, IP_ADDRESS, CREDIT_CARD, SECRET), {n} numbers "
                                                     "distinct values per record, e.g. '[{KIND}]' or '<{KIND}_{n}>'")
    roles: list[Role] = Field(["system", "user", "assistant", "tool_call", "tool"],
                              description="turns to scan, by role")
    include_private_ips: bool = Field(False, description="also redact private, loopback and reserved IP addresses "
                                                         "(192.168.x.x, 127.0.0.1, documentation ranges)")
    min_secret_entropy: float = Field(3.5, ge=0, le=8, description="bits per character a value next to a "
                                                                   "key/token/secret/password word needs to count "
                                                                   "as a generated secret")

    @field_validator("placeholder")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(KIND="EMAIL", kind="email", n=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"placeholder template {value!r} is invalid ({exc}); use {{KIND}}, {{kind}} and {{n}}")
        return value


def redact_text(text: str, spans, placeholder: str, numbering: dict[tuple[str, str], int]) -> str:
    out = []
    pos = 0
    for start, end, kind, _ in spans:
        value = text[start:end]
        key = (kind, value)
        if key not in numbering:
            numbering[key] = sum(1 for k in numbering if k[0] == kind) + 1
        out.append(text[pos:start])
        out.append(placeholder.format(KIND=kind.upper(), kind=kind, n=numbering[key]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


# Turns of a row are scanned as one text (one pass per detector instead of one per turn), joined
# by a separator no pattern matches across; spans are mapped back to their turns afterwards.
SEPARATOR = "\n\x00\n"


def scan_row(row: dict[str, Any], cfg: dict[str, Any], kinds: frozenset[str], roles: frozenset[str]) -> Any:
    """None when the row holds nothing; else ``(counts, subtypes, where, new row or None)``."""
    turns = [(side, i, turn["content"]) for side in SIDES for i, turn in enumerate(row.get(side) or ())
             if turn["role"] in roles and turn["content"]]
    if not turns:
        return None
    joined = SEPARATOR.join(content for _, _, content in turns)
    spans = find_pii(joined, kinds, cfg["include_private_ips"], cfg["min_secret_entropy"])
    if not spans:
        return None
    starts, pos = [], 0
    for _, _, content in turns:
        starts.append(pos)
        pos += len(content) + len(SEPARATOR)
    per_turn: dict[int, list] = {}
    for start, end, kind, subtype in spans:
        k = bisect_right(starts, start) - 1
        offset, size = starts[k], len(turns[k][2])
        if start - offset >= size:  # inside a separator: cannot happen, but never index past a turn
            continue
        per_turn.setdefault(k, []).append((start - offset, min(end - offset, size), kind, subtype))
    counts: Counter = Counter()
    subtypes: Counter = Counter()
    for found in per_turn.values():
        counts.update(span[2] for span in found)
        subtypes.update(span[3] for span in found)
    where = [f"{turns[k][0]}[{turns[k][1]}]" for k in sorted(per_turn)]
    if cfg["action"] != "redact":
        return dict(counts), dict(subtypes), where, None
    numbering: dict[tuple[str, str], int] = {}
    new_sides = {side: [dict(t) for t in row[side]] for side in {turns[k][0] for k in per_turn}}
    for k in sorted(per_turn):
        side, i, content = turns[k]
        new_sides[side][i]["content"] = redact_text(content, per_turn[k], cfg["placeholder"], numbering)
    return dict(counts), dict(subtypes), where, {**row, **new_sides}


class PiiRedact(CurationOp):
    name = "pii_redact"
    title = "PII redaction"
    summary = "replace e-mails, phones, IPs, card numbers and secrets with placeholders (or drop the rows)"
    category = "transform"
    config_model = PiiConfig

    def run(self, data: OpInput, config: PiiConfig, ctx: OpContext) -> OpResult:
        found = ctx.map_rows(data, scan_row, what="looking for personal data", cfg=config.model_dump(),
                             kinds=frozenset(config.kinds), roles=frozenset(config.roles))
        result = OpResult.keep_all(len(found))
        totals: Counter = Counter()
        subtypes: Counter = Counter()
        rows_with: Counter = Counter()
        for i, item in enumerate(found):
            if item is None:
                continue
            counts, kinds_found, where, new_row = item
            totals.update(counts)
            subtypes.update(kinds_found)
            rows_with.update(counts.keys())
            detail = {"counts": counts, "subtypes": kinds_found, "where": where}
            if config.action == "drop":
                result.keep[i] = False
                result.removals[i] = Removal("contains PII", {"rule": "action=drop", "value": sum(counts.values()),
                                                              "threshold": 0, **detail})
            else:
                result.changes[i] = Change(new_row, "PII redacted", detail)
        result.report = {"rows": len(found), "rows_with_pii": sum(1 for f in found if f is not None),
                         "changed": len(result.changes), "removed": len(result.removals),
                         "totals": dict(totals), "rows_by_kind": dict(rows_with), "subtypes": dict(subtypes)}
        return result


@hookimpl
def register_curation_ops(register):
    register(PiiRedact())
