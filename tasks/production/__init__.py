"""The production side: serving variants (export), batch scoring of dropped files (score), online
scoring (api) and drift monitoring of the prediction log (drift)."""
