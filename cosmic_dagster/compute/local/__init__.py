"""Local batch system: detached jobs with slots on this machine (the default profile)."""
