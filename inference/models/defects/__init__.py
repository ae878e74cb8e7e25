"""Surface-defect classifier trained on generated textures."""
