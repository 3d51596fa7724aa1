"""Training runs: recipes, the back-end contract, run folders and the run subprocess."""
