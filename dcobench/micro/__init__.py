"""Micro world: a tiny procedural 32x32 image world with captions and an exact oracle.

A plugin of the core (`plugin.py`, entry point `dcobench.plugins: micro`): nothing outside this
package imports it.
"""
