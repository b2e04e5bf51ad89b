"""Arithmetic for the example repository town."""


def add(a, b):
    return a + b
