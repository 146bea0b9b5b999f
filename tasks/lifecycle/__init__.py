"""The model lifecycle: the registry's write side, production folder and version archive (registry), DVC
recording of each version (versions) and the continual-learning cycle (retrain)."""
