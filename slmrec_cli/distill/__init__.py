"""SLMRec distillation (paper Section 4): block mapping, feature losses, multi-supervision."""
