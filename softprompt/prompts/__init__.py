"""The task level: a tuned prompt with its task, its folder on disk, its evaluation, predictions and model card."""
