"""slmrec: small LLM-based sequential recommenders."""

__version__ = "0.1.0"
