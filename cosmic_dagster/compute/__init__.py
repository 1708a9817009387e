"""Running reconstruction jobs: one adapter per scheduler behind :class:`Compute`."""
