"""Training: the loop (``trainer``), its data (``train_data``), config and presets, losses, schedules, resume state
and distributed helpers. Imports data, metrics, models and inference; never ensembling, experiments or cli."""
