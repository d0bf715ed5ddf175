"""The concept-extraction engine: pipelined input (DataLoader workers decode each image once and run both
models' image plans), device and precision, a sharded resumable store, and the accelerate process split.

``infincond.features.extract_features`` is the public entry point; it delegates the image pass to
:func:`infincond.extract.engine.run_extraction`.
"""

from .preprocess import PREPROCESS_VERSION, ImagePlan, image_plan

__all__ = ["PREPROCESS_VERSION", "ImagePlan", "image_plan"]
