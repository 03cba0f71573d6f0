"""Per-video work over every frame in order: candidate boxes -> tracks -> kept rows -> 3D."""
