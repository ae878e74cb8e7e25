"""Handwritten digit recognizer trained on scikit-learn's digits."""
