"""Running one experiment: its configuration, data, batches, training loop, seed ensembles and the dataset it writes."""
