"""remoteglm.serve"""
