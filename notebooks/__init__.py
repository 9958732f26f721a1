"""The project's notebooks (``*.ipynb``) and ``execute``, which runs one top to bottom."""
