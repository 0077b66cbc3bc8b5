"""Image recipes, tags and builds."""
