"""MMLU's 57 subjects and the four groups lm-evaluation-harness reports them under.

lm-eval tags every ``mmlu_<subject>`` task with one of ``mmlu_{stem,humanities,social_sciences,other}_tasks``;
a group's score is the size-weighted mean over its subjects, and ``mmlu`` itself the size-weighted
mean over every subject.
"""
from __future__ import annotations

GROUPS: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
        "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios",
        "philosophy", "prehistory", "professional_law", "world_religions",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology", "human_sexuality",
        "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging", "management",
        "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting",
        "professional_medicine", "virology",
    ),
}

GROUP_OF: dict[str, str] = {subject: group for group, subjects in GROUPS.items() for subject in subjects}


def group_of(subject: str) -> str | None:
    """The group of a subject (``world_religions`` -> ``humanities``), None for a subject MMLU lacks."""
    return GROUP_OF.get(subject)


def description(subject: str) -> str:
    """The header line lm-eval puts before every MMLU prompt of a subject."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
