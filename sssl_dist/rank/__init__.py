"""What runs on each DDP rank: the per-worker training loop, one epoch's pieces, the collectives
and the precision choice."""
