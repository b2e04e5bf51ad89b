import unittest

import text


class TestGreet(unittest.TestCase):
    def test_greet(self):
        self.assertEqual(text.greet("town"), "Hello, town!")
