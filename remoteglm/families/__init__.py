"""The model families, one module each (see ``remoteglm.registry``)."""
