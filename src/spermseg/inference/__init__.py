"""Inference: forward passes over arrays (``forward``), predictors and bundles, ``spermseg predict``, ONNX, tiling,
video and stack readers, instances, morphometry and tracking. Imports data, metrics and models only."""
