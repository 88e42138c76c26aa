"""Streaming keyword detection: audio sources through FFmpeg, a detector that scores a sliding 1 s window
every hop, and its evaluation in false rejections at a fixed number of false alarms per hour.

- ``sources``: a file, URL or capture device decoded by FFmpeg (PyAV) into 16 kHz mono float32 chunks.
- ``runtime`` / ``scorer``: a checkpoint (log-mel inside the graph, on an exact backend) or an exported
  model, scoring ``(B, samples)`` windows.
- ``detector``: ring buffer, posterior smoothing, threshold and refractory period; ``listen`` drives it live.
- ``compose`` / ``labels`` / ``matching`` / ``evaluate`` / ``plot``: ``kwsbench stream-eval``.
"""
