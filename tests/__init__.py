"""The test tree is one package (each folder has an __init__.py), so its two conftest modules import as
tests.conftest and tests.flows.conftest and any mix of test files collects in one pytest command.
Shared helpers are imported by their full name: `from tests.conftest import make_tiny_bert`."""
