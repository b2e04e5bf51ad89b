"""Text helpers for the example repository town."""


def greet(name):
    return "Hello, " + name + "!"
