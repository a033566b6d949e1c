"""Device meshes, parameter shardings and activation sharding rules.

Three pieces, each usable alone:

  mesh.make_mesh([("data", -1), ("fsdp", 2), ("tensor", 1)])  -> jax Mesh
  strategy.param_shardings(params, mesh, strategy)           -> NamedShardings
  logical.constrain(x, ("act_batch", "act_len", "act_emb"))  -> constrained x

Mesh axes are always ('data', 'fsdp', 'tensor'): `data` replicates params and
splits the batch, `fsdp` splits both params (ZeRO-3 style) and the batch,
`tensor` splits attention heads / MLP hidden / vocab (Megatron style).
Parameters are placed by an ordered regex table (first match wins, as in
big_vision); activations by logical names (first match wins, as in MaxText).
"""
