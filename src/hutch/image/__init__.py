"""Image recipes and their content-hash tags (pure), and the pinned agent versions."""
