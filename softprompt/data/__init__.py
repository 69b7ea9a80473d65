"""Data: rows from files and the hub, tasks and their dev splits, rows turned into token ids, mixed batches."""
