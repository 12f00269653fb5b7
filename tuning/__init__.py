"""tune_weights.py's logic: the grid of weights, the runs and their scheduling over devices,
the metrics a sweep selects on, the statistics of the comparison, the report and the plots."""
