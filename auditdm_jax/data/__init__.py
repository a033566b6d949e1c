"""Data loading and preprocessing for auditdm_jax."""
