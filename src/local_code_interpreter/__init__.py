"""local-code-interpreter: a self-hosted code interpreter for AI agents."""

__version__ = "0.1.0"
