"""The objective (a module built from its LossConfig) and its pure tensor-in, tensor-out losses."""
from losses.angular import angular_hinge_loss, angular_loss
from losses.objective import (LOSSES, NEGATIVES, TERMS, CrossModalObjective, LossConfig,
                              negative_mask, pick_negative)
from losses.triplet import triplet_loss
from losses.weights import Weights

__all__ = ["angular_loss", "angular_hinge_loss", "triplet_loss", "LOSSES", "NEGATIVES", "TERMS",
           "LossConfig", "CrossModalObjective", "negative_mask", "pick_negative", "Weights"]
