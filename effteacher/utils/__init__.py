"""Shared plumbing below every command: boxes, plots, console and progress bars, files and run folders, distributed helpers, YAML reading, safe unpickling."""
