"""The SSSL method itself: the paper's equations one function each, the training step, the
clean/noisy split, the networks, and the song-level decision (Eq. 10 + SVM). No Ray, no
processes."""
