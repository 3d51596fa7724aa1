"""Headless dataset services: containers, formats, detection, conversion and the versioned store."""
