"""Report renderers: terminal text and JSON (Markdown and HTML arrive with the reports issue)."""
