"""Hand-written building blocks of the project's request-shape training data (see ../build_shapes.py)."""
