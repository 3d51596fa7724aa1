"""The Textual face of the studio. Only this package imports Textual; the CLI starts it with
``from studio.tui.app import run_app; run_app(workspace)``."""
