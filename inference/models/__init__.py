"""The shipped models, one folder each: manifest.toml, predict.py, train.py, weights.pt."""
