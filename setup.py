"""auditdm_jax: AuditDM (auditing MLLMs for capability gaps) in JAX."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (_HERE / name).read_text().splitlines()
  return [l.split("#")[0].strip() for l in lines if l.split("#")[0].strip()]


setuptools.setup(
    name="auditdm_jax",
    version="0.1.0",
    description="AuditDM in JAX: RL-trained auditors that find and fix MLLM "
                "capability gaps (PaliGemma-2 / Gemma-3 in Flax).",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["auditdm_jax", "auditdm_jax.*"]),
    # Shipped assets: the world SentencePiece model (auditdm_jax.data.
    # world_tokenizer loads it from the installed package) and the trained
    # world model zoo (params-only Orbax checkpoints + JSON sidecars,
    # auditdm_jax.world.zoo.shipped_zoo_dir()).
    package_data={"auditdm_jax.world": ["assets/*.model",
                                        "assets/zoo/*.json",
                                        "assets/zoo/**/*"]},
    install_requires=_requirements("requirements.txt"),
    extras_require={
        # Reference implementations (parity tests, HF configs) and diffusers
        # image backends. torch is pinned exactly: see requirements-torch.txt.
        "torch": _requirements("requirements-torch.txt"),
        "dev": _requirements("requirements-dev.txt"),
    },
    entry_points={"console_scripts": [
        "auditdm-archs=auditdm_jax.models.arch:main",
        "auditdm=auditdm_jax.main:console_main",
    ]},
)
