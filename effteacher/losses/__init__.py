"""Detection losses: IoU variants, target assignment, supervised and pseudo-label losses."""
