"""Which weights a run uses and where their engines live: the model table and checkpoint locations (zoo), the
run's choice of checkpoints or random weights (choice), and the engine cache built from them (engines)."""
