"""One training engine for SASRec, teacher and student."""
