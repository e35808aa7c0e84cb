"""Training (stage 1 image stage, stage 2 motion modules) and data preparation: a later issue."""
