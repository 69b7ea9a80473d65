"""Multi-task serving: one frozen base model, a store of prompts, a batcher that mixes tasks in one forward."""
