"""The HTTP layer: the shared ASGI pieces (auth, limits) and the apps mounted beside DevUI."""
