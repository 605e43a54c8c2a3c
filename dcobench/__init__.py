"""dcobench: train, sample, score and report text-to-image personalization methods."""

__version__ = "0.1.0"
