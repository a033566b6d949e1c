"""Backends by name, so configs and the service can pick one with a string.

  @register("world")
  class WorldBackend(ImageBackend): ...

  backend = get_backend("world", grid=4)      # factory(**kwargs)
  names()                                      # ['flux', 'remote', ...]

A factory is anything callable with keyword arguments that returns an
ImageBackend (a class, or a function). Importing `auditdm_jax.imaging`
registers the built-in backends; the torch ones import torch only when
built, so listing or building the world backend never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from auditdm_jax.imaging import base

F = TypeVar("F", bound=Callable[..., base.ImageBackend])

_FACTORIES: dict[str, Callable[..., base.ImageBackend]] = {}


def register(name: str) -> Callable[[F], F]:
  """Decorator: registers a backend factory under `name` (unique)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"a backend name must be a non-empty str, got {name!r}")

  def deco(factory: F) -> F:
    if name in _FACTORIES and _FACTORIES[name] is not factory:
      raise ValueError(f"image backend {name!r} is already registered "
                       f"({_FACTORIES[name]!r})")
    _FACTORIES[name] = factory
    return factory
  return deco


def names() -> list[str]:
  """Registered backend names, sorted."""
  return sorted(_FACTORIES)


def get_backend(name: str, **kwargs: Any) -> base.ImageBackend:
  """Builds the backend registered as `name` with `kwargs`.

  Raises:
    KeyError: for an unknown name (the message lists the known ones).
  """
  if name not in _FACTORIES:
    raise KeyError(f"unknown image backend {name!r}; known: {names()}")
  backend = _FACTORIES[name](**kwargs)
  if not isinstance(backend, base.ImageBackend):
    raise TypeError(f"factory of image backend {name!r} returned a "
                    f"{type(backend).__name__}, not an ImageBackend")
  return backend
