"""One analysis module per chapter of the book, named after its notebook (``notebooks/NN_<name>.ipynb``)."""
