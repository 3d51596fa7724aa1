"""The wheel's package list, which pyproject.toml cannot express: code, plugins and shipped data.

``recipes/`` and ``datasets/`` stay at the top of the repository, where people open them and where
the recipes' own paths (``datasets/train/...``) point. The wheel carries them as data-only
packages under ``studio/shipped/`` with the same layout, so an installed studio has its recipes,
samples and training sets too (``studio.resources`` finds either place). Mapping the folders with
``package_dir`` keeps setuptools in charge of what goes into the wheel, its RECORD and the sdist,
with no copy step to keep in sync; pyproject's ``packages.find`` cannot add mapped packages, hence
this file. No package is ever named ``datasets`` at the top level: that would shadow the Hugging
Face library (docs: GUIDE section 6).
"""
from setuptools import find_namespace_packages, setup

CODE = find_namespace_packages(include=["studio", "studio.*"])
# Built-in plugins are top-level packages found in plugins/ (which has no __init__.py itself).
PLUGINS = find_namespace_packages("plugins", include=["studio_*"])
# Every folder of recipes/ and datasets/ (datasets/train/ included) becomes studio.shipped.<folder>.
SHIPPED = [f"studio.shipped.{name}" for name in find_namespace_packages(include=["recipes", "datasets", "datasets.*"])]

setup(
    packages=[*CODE, *PLUGINS, *SHIPPED],
    package_dir={
        **{name: f"plugins/{name}" for name in PLUGINS if "." not in name},
        "studio.shipped.recipes": "recipes",
        "studio.shipped.datasets": "datasets",
    },
    package_data={"studio.tui": ["*.tcss"], **{name: ["*"] for name in SHIPPED}},
)
