"""The engine: how a prompt enters a decoder-only or an encoder-decoder model; packed scoring, the cache, decoding."""
