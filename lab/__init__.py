"""lab: a scaling-law experimentation lab.

Train grids of small LLaMA-style proxy models, collect their records into tables, fit scaling
laws, and turn the fits into a recipe for a full-size run. Symbols (N, D, C, B) are defined once,
in :mod:`lab.counting`.
"""

__version__ = "0.1.0"
