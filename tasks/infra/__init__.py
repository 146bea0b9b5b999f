"""Shared infrastructure every layer uses: the parameter schema (config), errors, workspace paths
(storage), table reading (tables), model loading (models), metrics and paired statistics, the
shipped datasets (embedded), the Great Expectations suites and their runner (suites, checks), and
the helpers the stages share (common)."""
