"""valuedrift_trainer: the GPU side of valuedrift (TRL/transformers training and generation).

Driven only by the TypeScript activities through `python -m valuedrift_trainer <command> --config
<file.json>`; its only output protocol is one JSON event per stdout line (see events.py).
"""

__version__ = "0.1.0"
