"""Serving a model behind an OpenAI-compatible HTTP API (`studio serve`), in this process or as a
background subprocess. Nothing here imports torch at module import time."""
