"""Generators: where a model's samples come from.

Built in: `real` (the train split; the baseline), `real-shuffled` (a negative
control) and `gaussian` (a class-conditional Gaussian in PCA space).
Users bring a Python entry point (`python_entry`) or samples already drawn
in one of the common formats (`files`)."""
