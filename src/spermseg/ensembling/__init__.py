"""Ensembling: the soft-mask cache builder, input selection (E1-E4), out-of-fold stacking, ensemble training and
Table 3. Imports data, metrics, models, inference and training; never experiments or cli."""
