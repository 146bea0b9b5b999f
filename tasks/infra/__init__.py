"""Shared infrastructure every layer uses, holding no model, training or data-quality code: the parameter
schema (config), errors, workspace paths (storage), table reading (tables), the processed splits (splits),
metrics and paired statistics, the shipped datasets (embedded), logging (logs), the workspace lock
(locks), the drop folder (dropfolder), the production log (prodlog), the registry's read side
(registry_view) and what a results file records of its making (provenance)."""
