"""Widgets of the studio app, grouped by what they show."""
