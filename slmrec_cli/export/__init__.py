"""Deployable artifacts: merged torch module, ONNX (+ int8/int4), bitsandbytes variants, latency bench."""
