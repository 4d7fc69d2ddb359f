"""The local federation demo: synthetic records, processes on 127.0.0.1, the SDK end to end.

An application on top of every layer: `seed` writes synthetic department databases,
`launcher` starts nodes and a coordinator as processes, `run` plays the demo's scenes.
"""
