"""Discovery: harvest failures, group them into types, compare models.

  harvest    auditors x image pool -> kept failures (references agree, target
             differs), de-duplicated, resumable, written as a TFDS dataset
             with full provenance (`python -m auditdm_jax.discover.harvest`)
  dataset    that dataset's TFDS builder, schema and reader (`read_failures`)
  taxonomy   failure types (TF-IDF + k-means++ in numpy), failure rates,
             model diff, and on the world: NMI / purity against the oracle's
             skills and the planted gaps found
             (`python -m auditdm_jax.discover.taxonomy`)

Submodules are imported on use (harvest pulls in JAX and TFDS; the
taxonomy needs only numpy).
"""
