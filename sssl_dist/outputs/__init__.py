"""What the commands write: reports, tables and plots, the comparison statistics, the exported
model and catalogue predictions."""
