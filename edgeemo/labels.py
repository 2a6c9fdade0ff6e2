"""The canonical emotion labels, in the order FER2013 numbers them (0..6)."""

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
