"""HTTP apps and layers served beside DevUI."""
