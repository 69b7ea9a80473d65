"""The model layer: a frozen base and its tokenizer (loaded, prepacked, or random on a real config); the prompt."""
