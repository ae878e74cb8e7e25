"""The modelfolio inference server: loads each model once, serves a Replicate-compatible API."""
