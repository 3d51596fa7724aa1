"""Headless curation: operations (plugins), the pipeline that chains them into a new dataset
version, the side table of every removal and change, and review edits."""
