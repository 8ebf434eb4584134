"""The driver side: one run's lifecycle (run.py), launching or reading back a TorchTrainer,
scheduling folds and arms, the shared warm-up, the split service, `sssl compare`, and which Ray
a command joins."""
