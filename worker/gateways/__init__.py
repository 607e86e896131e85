"""The gateways: what an adapter is (`base`), what a gateway declares (`spec`), the one
list of them (`registry`), a package per gateway (its spec, adapter and simulator)
and the sandbox that serves the simulators.

Importing this package imports nothing else: the producer reads specs in web apps.
"""
