"""Client-facing protocol adapters: RESP (`resp`) and, later, HTTP.

Each adapter turns wire bytes into commands and results into wire bytes; none of them does IO.
"""
