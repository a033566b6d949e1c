"""GRPO for the auditor: pure loss functions, the jitted step, the loop."""
