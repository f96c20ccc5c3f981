"""remoteglm.model"""
