"""Semi-supervised parts: teacher EMA, Pseudo Label Assigner, thresholds, domain discriminator."""
