"""Auditing: prompts, rollout over the three pairing modes, judge D, reward."""
