"""Models the studio builds and loads: the embedded default model (built offline from the bundled
samples) and one loader for hub ids, local folders, PEFT adapters and run folders.

Nothing here imports torch or transformers at module import time; the functions do.
"""
