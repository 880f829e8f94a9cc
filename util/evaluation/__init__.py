"""The evaluation core that every protocol, attack target and report shares: the one differentiable inference
(inference.py: whole image or sliding window), the released scripts' cv2 resizes (rescale.py) and the one
confusion-matrix metric (metrics.py)."""
