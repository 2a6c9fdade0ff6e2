"""edgeemo's workstation side: data sets, training, evaluation and int8 conversion.

Installed as ``edgeemo_convert``; the only part of edgeemo that imports TensorFlow, and only inside the
functions that need it, so ``import edgeemo_convert`` stays cheap.
"""
