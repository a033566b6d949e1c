"""Evaluation: the world benchmark and the auditor's validity (world_bench)."""
