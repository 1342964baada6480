"""analysis — reads ncsweep's Parquet results (duckdb/pyarrow/pandas; no torch, no Ray), fits
sensitivity tables, compares architectures, draws plots and writes the report."""
from .load import load  # noqa: F401
