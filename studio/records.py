"""The canonical record every dataset format maps to and from.

A record is a conversation (``messages``), optionally with a preference pair (``chosen`` /
``rejected`` continuations of ``messages``) or an unpaired feedback ``label`` (KTO). Keeping one
shape lets every curation op, generator and trainer ignore where the data came from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# tool_call is an assistant turn that calls a tool (ShareGPT ``function_call``, OpenAI
# ``tool_calls``); its content is a JSON object (or list, for parallel calls) with name/arguments.
ROLES = ("system", "user", "assistant", "tool_call", "tool")
KINDS = ("conversation", "preference", "unpaired")


@dataclass(slots=True)
class Turn:
    role: str
    content: str
    # OpenAI fine-tuning lets an assistant message opt out of the loss (weight 0).
    weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content, "weight": self.weight}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Turn":
        return cls(data["role"], data["content"], data.get("weight"))


@dataclass(slots=True)
class Record:
    messages: list[Turn]
    chosen: list[Turn] | None = None
    rejected: list[Turn] | None = None
    label: bool | None = None
    tools: str | None = None  # JSON text of the tool schemas offered to the model
    # Fields of the source row that have no canonical home (ids, Dolly category, LIMA source...),
    # kept so that writing back to the same format loses nothing.
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.chosen is not None or self.rejected is not None:
            return "preference"
        if self.label is not None:
            return "unpaired"
        return "conversation"

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0].role == "system":
            return self.messages[0].content
        return None

    def to_row(self) -> dict[str, Any]:
        """Arrow row: meta is JSON text because its keys differ from format to format."""
        return {
            "kind": self.kind,
            "messages": [t.to_dict() for t in self.messages],
            "chosen": None if self.chosen is None else [t.to_dict() for t in self.chosen],
            "rejected": None if self.rejected is None else [t.to_dict() for t in self.rejected],
            "label": self.label,
            "tools": self.tools,
            "meta": json.dumps(self.meta, ensure_ascii=False, sort_keys=True) if self.meta else None,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Record":
        def turns(value):
            return None if value is None else [Turn.from_dict(t) for t in value]

        return cls(
            messages=turns(row["messages"]) or [],
            chosen=turns(row.get("chosen")),
            rejected=turns(row.get("rejected")),
            label=row.get("label"),
            tools=row.get("tools"),
            meta=json.loads(row["meta"]) if row.get("meta") else {},
        )

    def text(self) -> str:
        """All turn contents joined: what search and text statistics look at."""
        parts = [t.content for t in self.messages]
        for side in (self.chosen, self.rejected):
            if side:
                parts.extend(t.content for t in side)
        return "\n".join(parts)


def arrow_schema():
    import pyarrow as pa

    turn = pa.struct([("role", pa.string()), ("content", pa.string()), ("weight", pa.float64())])
    return pa.schema(
        [
            ("kind", pa.string()),
            ("messages", pa.list_(turn)),
            ("chosen", pa.list_(turn)),
            ("rejected", pa.list_(turn)),
            ("label", pa.bool_()),
            ("tools", pa.string()),
            ("meta", pa.string()),
        ]
    )


def normalise_tool_call(value: Any) -> str:
    """One spelling for a tool call's JSON so every format round-trips to equal records."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) and isinstance(value.get("arguments"), str):
        try:
            value = {**value, "arguments": json.loads(value["arguments"])}
        except json.JSONDecodeError:
            pass
    return json.dumps(value, ensure_ascii=False)
