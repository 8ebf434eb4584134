"""Where a run's files live and how they are written: checkpoints (the one module that creates,
copies, renames and deletes them), the files' names, and output-directory locks."""
