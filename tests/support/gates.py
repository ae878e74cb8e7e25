"""State the fixture predictors share with the tests, in a normally imported module, so every
server that loads a fixture model (each under its own module name) sees the same objects."""

from __future__ import annotations

import threading

GATE = threading.Event()  # tests hold predictions in flight by clearing it
GATE.set()
BATCHES: list[int] = []  # the size of each batch the shapes model ran
RUNNING = threading.Event()  # set by a fixture predictor once a batch is on the model
PREPARED: list[tuple[int, str]] = []  # (image width, thread name) for each preprocess call
