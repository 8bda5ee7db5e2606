"""Fine-tune DINOv2 into an image search engine, one DVC stage at a time."""

__version__ = "0.1.0"
