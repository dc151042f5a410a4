"""Sphinx configuration for the certbot-dane documentation."""

project = "certbot-dane"
author = "certbot-dane contributors"
copyright = "certbot-dane contributors"
release = "0.1.0"
version = "0.1"

extensions: list[str] = []

root_doc = "index"
exclude_patterns = ["_build"]

html_theme = "alabaster"
html_title = "certbot-dane"
html_static_path: list[str] = []

highlight_language = "none"
