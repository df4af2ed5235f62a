"""Shared parts of the learned video codec baselines (DVC, VCII).

``intra`` codes key frames with a conventional intra codec through PyAV; ``frames`` pads,
crops and warps frame tensors; ``checkpoint`` saves and loads our checkpoint records
(``weights_only`` loading, first-mismatch refusal); ``data`` reads training clips;
``trainloop`` is the resumable training loop both codecs share.
"""
