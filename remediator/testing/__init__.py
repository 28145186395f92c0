"""Test doubles that the project owns and ships with the package.

They live in the package rather than under ``tests/`` so that every test suite (and a
developer running the daemon by hand) can use the same fakes instead of growing its own.
"""
