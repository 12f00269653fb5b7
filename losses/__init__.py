"""Loss functions: pure tensor-in, tensor-out."""
from losses.angular import angular_loss
from losses.objective import cross_modal_loss, negative_mask
from losses.triplet import triplet_loss

__all__ = ["angular_loss", "triplet_loss", "cross_modal_loss", "negative_mask"]
