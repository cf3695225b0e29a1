"""Deployable exports: one inference graph per method, written in every installed runtime format.

``inference.Inference`` is what a method hands over (unit RGB image → map, score, with its
normalisation and calibration inside); ``formats`` writes and runs it as ONNX (onnxruntime)
and OpenVINO IR; ``compare`` measures an exported model against the PyTorch graph.
"""
