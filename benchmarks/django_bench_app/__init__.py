"""The model the Django capture benchmark writes; ``BENCH_VARIANT`` decides which auditing it gets."""
