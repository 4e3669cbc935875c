"""Semi-supervised parts: teacher EMA, Pseudo Label Assigner, thresholds (Epoch Adaptor, GMM), class gate, dense targets, domain discriminator, pseudo-label quality."""
