"""Example models for seqbench, brought from outside its package (see leaky.py)."""
