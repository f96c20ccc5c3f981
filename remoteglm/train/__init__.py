"""remoteglm.train"""
