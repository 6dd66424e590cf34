"""Ranks, metrics and metrics files, exactly as ../shared/PROTOCOL.md."""
