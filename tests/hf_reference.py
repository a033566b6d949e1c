"""Test-side alias of `auditdm_jax.convert.hf_reference` (imported by many tests)."""

from auditdm_jax.convert.hf_reference import build_hf  # pylint: disable=unused-import
from auditdm_jax.convert.hf_reference import hf_config  # pylint: disable=unused-import
from auditdm_jax.convert.hf_reference import hf_model_class  # pylint: disable=unused-import
from auditdm_jax.convert.hf_reference import params_of  # pylint: disable=unused-import
from auditdm_jax.convert.hf_reference import to_torch  # pylint: disable=unused-import
