"""Sampling: strategies (greedy / temperature / top-k / top-p), the jitted
KV-cache sampler and teacher-forced log-probs under the same distribution."""

from auditdm_jax.sampling.sampler import (Buckets, SampleOutput, Sampler,
                                          bucket, left_pad, sample,
                                          token_logprobs, trace_count)
from auditdm_jax.sampling.strategies import (SamplingConfig, choose,
                                             process_logits)
from auditdm_jax.sampling import strategies

__all__ = [
    "Buckets", "SampleOutput", "Sampler", "SamplingConfig", "bucket", "choose",
    "left_pad", "process_logits", "sample", "strategies", "token_logprobs",
    "trace_count",
]
