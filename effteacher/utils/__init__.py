"""Small shared utilities: boxes, plots, console, files."""
