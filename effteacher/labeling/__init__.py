"""The labeling loop: the teacher pass over images, `effteacher pseudo` (labels to review) and `effteacher rank` (what to label next) with its scores."""
