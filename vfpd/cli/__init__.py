"""Entry points: argument parsing and printing only."""
