"""The parts of the image pass: fast image plans (preprocess), the loader whose workers decode each image
once and apply both models' plans, device and precision (runtime), and the sharded resumable store. They
sit below :mod:`infincond.features`; :mod:`infincond.extraction` runs them (``extract_features``).
"""

from .preprocess import PREPROCESS_VERSION, ImagePlan, image_plan

__all__ = ["PREPROCESS_VERSION", "ImagePlan", "image_plan"]
