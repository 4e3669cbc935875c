"""`python -m effteacher.config`: print the configuration reference (docs/configuration.md)."""

from effteacher.config.reference import reference_markdown

print(reference_markdown(), end="")
