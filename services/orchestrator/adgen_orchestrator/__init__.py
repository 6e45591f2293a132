"""The orchestrator: the public AdService composing the copywriter and diffusion services."""
