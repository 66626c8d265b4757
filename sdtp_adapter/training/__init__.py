"""Training: stage 1 token marking (saliency), the three losses, mask simulation, the loop."""
