"""Verifiers that turn a request's credentials into an `identity.Caller`."""
