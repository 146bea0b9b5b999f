"""The model lifecycle: the registry, production folder and version archive with their lock
(registry), DVC recording of each version (versions) and the continual-learning cycle (retrain)."""
