"""Shared infrastructure every layer uses, holding no model or data-quality code: the parameter schema
(config), errors, workspace paths (storage), table reading (tables), metrics and paired statistics,
the shipped datasets (embedded), the workspace lock (locks), the drop folder (dropfolder), the
production log (prodlog), the registry's read side (registry_view), and the helpers the stages share
(common)."""
