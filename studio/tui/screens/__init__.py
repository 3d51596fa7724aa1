"""Screens and dialogs of the studio app."""
