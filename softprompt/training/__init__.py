"""Training: the config, the optimiser recipes, the after-step rule, the run folder, data parallelism, the loop."""
