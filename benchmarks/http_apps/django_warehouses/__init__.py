"""The Django app of the HTTP benchmark: one Warehouse model."""
