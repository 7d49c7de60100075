"""Training: one registry of names (models, datasets, optimizers, activations, losses), the model
zoo, the run's config, checkpoints, metrics and the Trainer that `python -m distbp.train` loops over.

The commands (distbp.train, bench, search, equivalence, doctor, plot) import from here, never the
other way round."""
from . import (
    models,
    registry,
)
from .registry import build_model, build_optimizer, register_model

__all__ = ["build_model", "build_optimizer", "models", "register_model", "registry"]
