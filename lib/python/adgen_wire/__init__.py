"""What both sides of the AdGen wire agree on: channel options, metadata keys, limits and formats.

The services and the client SDK both import this package, and it imports neither of them, so the
server runtime never needs the SDK and the SDK never needs a server library (or torch).
"""
