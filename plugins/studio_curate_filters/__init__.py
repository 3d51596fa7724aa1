"""Built-in quality filters, one curation op each:

* ``length_filter``: words and real tokenizer tokens of one part of a record
* ``turn_filter``: number of conversation turns
* ``response_filter``: missing, empty and truncated answers
* ``refusal_filter``: refusals and AI boilerplate, with a policy for preference pairs
* ``repetition_filter``: repeated lines, paragraphs and n-grams (Gopher's rules)
* ``non_text_filter``: answers that are mostly symbols, digits or markup
* ``language_filter``: allowed languages (py3langid)

Every removal's reason names the rule, and its detail carries ``rule``, the measured ``value`` and
the ``threshold``. Per-row work runs through ``ctx.map_rows`` (all cores on big inputs); the
functions it maps are module-level so worker processes can import them.
"""
from __future__ import annotations

from studio.hookspecs import hookimpl
from studio_curate_filters.language import LanguageFilter
from studio_curate_filters.length import LengthFilter
from studio_curate_filters.non_text import NonTextFilter
from studio_curate_filters.refusal import RefusalFilter
from studio_curate_filters.repetition import RepetitionFilter
from studio_curate_filters.response import ResponseFilter
from studio_curate_filters.turns import TurnFilter

OPS = (LengthFilter, TurnFilter, ResponseFilter, RefusalFilter, RepetitionFilter, NonTextFilter, LanguageFilter)


@hookimpl
def register_curation_ops(register):
    for op in OPS:
        register(op())
