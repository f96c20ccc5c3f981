"""remoteglm.data"""
