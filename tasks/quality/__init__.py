"""Data quality: the Great Expectations suites, one per door data enters by (suites), and their runner (checks)."""
