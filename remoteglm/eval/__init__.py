"""remoteglm.eval"""
