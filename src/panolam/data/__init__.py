"""Multi-view head data: the sharded dataset format and its loader, the paper's camera laws, generator plug-ins (the procedural default) and labels.
"""
